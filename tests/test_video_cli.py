"""Clips through the command line on tiny Wan, LTX-Video and CogVideoX: invert, reconstruct and edit write videos;
per-frame metrics and the temporal error; bad clips are one error line."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from inversa.cli.main import main
from inversa.core.video_metrics import clip_summary, temporal_error
from inversa.io.video import read_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second contended thread only waits


def frames(n: int, size: int = 32) -> np.ndarray:
    """n frames of a photo panning right, uint8 (n, size, size, 3)."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((size + 2 * n, size + n)))
    return np.stack([photo[f:f + size, 2 * f:2 * f + size] for f in range(n)])


def write_mp4(path, arr, fps=8):
    import imageio.v3 as iio

    iio.imwrite(path, arr, fps=fps, plugin="FFMPEG")
    return str(path)


def write_folder(path, arr):
    os.makedirs(path, exist_ok=True)
    for f, frame in enumerate(arr):
        Image.fromarray(frame).save(os.path.join(path, f"{f:03d}.png"))
    return str(path)


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def fails(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_mp4_round_trips_through_invert_reconstruct_edit(family, tmp_path, capsys, pipeline_dir):
    model, src = pipeline_dir(family), write_mp4(tmp_path / "clip.mp4", frames(5))
    out = tmp_path / "inv"
    code, stdout, err = run(capsys, "invert", src, "--model", model, "--size", 32, "--steps", 2, "--method", "ddim",
                            "-o", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 5 and len(metrics["psnr_per_frame"]) == 5 and len(metrics["ssim_per_frame"]) == 5
    assert metrics["psnr"] == pytest.approx(np.mean(metrics["psnr_per_frame"]), rel=1e-5)
    assert metrics["temporal_error"] > 0 and "temporal error" in stdout
    got, fps = read_frames(str(out / "clip_reconstruction.mp4"))
    assert len(got) == 5 and got[0].shape == (32, 32, 3) and fps == 8.0  # the source's rate
    code, stdout, err = run(capsys, "reconstruct", out, "--model", model, "-o", tmp_path / "rec.mp4")
    assert code == 0 and "1 clip(s) of 5 frames" in stdout, err
    assert len(read_frames(str(tmp_path / "rec.mp4"))[0]) == 5
    code, stdout, err = run(capsys, "edit", src, "-s", "a red circle", "-t", "a blue circle", "--model", model,
                            "--size", 32, "--steps", 2, "-o", tmp_path / "edited.mp4")
    assert code == 0, err
    edited, source = read_frames(str(tmp_path / "edited.mp4"))[0], read_frames(str(tmp_path / "edited_source.mp4"))[0]
    assert len(edited) == len(source) == 5 and np.abs(edited[0] - source[0]).max() > 0  # the prompt changed it


def test_cogvideox_frames_folder_round_trips_losslessly(tmp_path, capsys, pipeline_dir):
    model, src = pipeline_dir("cogvideox"), write_folder(tmp_path / "clip", frames(9))
    out = tmp_path / "inv"
    code, _, err = run(capsys, "invert", src, "--model", model, "--steps", 2, "--method", "ddim", "--video-format",
                       "png", "-o", out)
    assert code == 0, err
    assert sorted(os.listdir(out / "clip_reconstruction")) == [f"frame_{f:04d}.png" for f in range(9)]
    inputs = read_frames(str(out / "clip_input"))[0]
    assert np.array_equal(np.round(np.stack(inputs) * 255), frames(9))  # PNG frames: nothing lost on the way in
    code, _, err = run(capsys, "reconstruct", out, "--model", model, "-o", tmp_path / "rec.png")
    assert code == 0, err
    again, first = read_frames(str(tmp_path / "rec"))[0], read_frames(str(out / "clip_reconstruction"))[0]
    assert np.array_equal(np.stack(again), np.stack(first))  # reconstruct regenerates invert's clip exactly
    code, _, err = run(capsys, "edit", src, "-s", "a red circle", "-t", "a blue circle", "--model", model,
                       "--steps", 2, "-o", tmp_path / "edited.png")
    assert code == 0, err
    assert len(os.listdir(tmp_path / "edited")) == len(os.listdir(tmp_path / "edited_source")) == 9


def test_temporal_error_is_the_frame_difference_error():
    source = torch.zeros(1, 3, 4, 8, 8)
    shift = torch.tensor([0.0, 0.2, 0.2, -0.2]).view(1, 1, 4, 1, 1)  # [-1, 1] scale: /2 on the [0, 1] scale
    assert float(temporal_error(source, source + shift)) == pytest.approx((0.1 + 0.0 + 0.2) / 3)
    assert float(temporal_error(source, source + 0.5)) == 0.0  # a constant offset has no flicker
    summary = clip_summary(source, source + shift)
    assert summary["frames"] == 4 and summary["psnr_per_frame"][0] == float("inf")
    assert summary["psnr_per_frame"][1] == pytest.approx(10 * np.log10(1 / 0.01), rel=1e-5)


def test_bad_clips_are_one_error_line(tmp_path, capsys, pipeline_dir):
    wan = pipeline_dir("wan")
    assert "video" in fails(capsys, "invert", tmp_path / "none.mp4", "--model", wan) and \
        "does not exist" in fails(capsys, "invert", tmp_path / "none.mp4", "--model", wan)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(200))
    assert "is not a readable video" in fails(capsys, "invert", tmp_path / "bad.mp4", "--model", wan)
    six = write_mp4(tmp_path / "six.mp4", frames(6))
    assert "a clip of 6 frames does not fit" in fails(capsys, "invert", six, "--model", wan, "--size", 32)
    code, _, err = run(capsys, "invert", six, "--model", wan, "--size", 32, "--frames", 5, "--steps", 1,
                       "--method", "ddim", "-o", tmp_path / "cut")
    assert code == 0, err  # --frames keeps the first five
    folder = write_folder(tmp_path / "mixed", frames(5))
    Image.fromarray(frames(1, 40)[0]).save(os.path.join(folder, "004.png"))
    assert "differ in size: 000.png is 32x32, 004.png is 40x40" in fails(capsys, "invert", folder, "--model", wan)
    assert "holds no frames" in fails(capsys, "invert", tmp_path / "cut" / "..", "--model", wan)


def test_too_many_frames_and_clips_for_image_models(tmp_path, capsys, monkeypatch, pipeline_dir):
    import inversa.io.video

    monkeypatch.setattr(inversa.io.video, "MAX_FRAMES", 4)
    src = write_folder(tmp_path / "clip", frames(5))
    assert "more than 4 frames; keep the first N with --frames N" in fails(
        capsys, "invert", src, "--model", pipeline_dir("wan"))
    line = fails(capsys, "invert", src, "--model", pipeline_dir("sd"))
    assert "is a video; model" in line and "invert clips with a video model" in line
