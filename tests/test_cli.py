"""The command line end to end on a tiny pipeline folder, and its one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inversa import Inversion
from inversa.cli.main import main
from inversa.io.images import load_image


def test_invert_writes_inversion_reconstruction_and_metrics(pipeline_dir, photo, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["invert", photo, "--model", pipeline_dir("sd"), "--method", "fixed_point", "--steps", "3",
                 "--opt", "iters=3", "--prompt", "a photo", "-o", str(out)])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("fixed_point 3 steps: psnr") and "ssim" in line and "latent_mse" in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] <= 9 and metrics["steps"] == 3 and 0 < metrics["ssim"] <= 1
    inv = Inversion.load(str(out / "inversion.safetensors"))
    assert inv.prompts == ["a photo"] and inv.config == {"iters": 3} and inv.image_size == [64, 64]
    assert Image.open(out / "astronaut_reconstruction.png").size == (64, 64)

    png = tmp_path / "again.png"
    assert main(["reconstruct", str(out / "inversion.safetensors"), "--model", pipeline_dir("sd"), "-o", str(png)]) == 0
    again = np.asarray(Image.open(png), dtype=np.int16)
    first = np.asarray(Image.open(out / "astronaut_reconstruction.png"), dtype=np.int16)
    assert np.abs(again - first).max() <= 1


@pytest.mark.parametrize("args,message", [
    (["invert", "missing.png"], "image file missing.png does not exist"),
    (["invert", "{corrupt}"], "is not a readable image"),
    (["invert", "{truncated}"], "corrupt or truncated image"),
    (["invert", "{photo}", "--method", "magic"], "unknown method 'magic'; available:"),
    (["invert", "{photo}", "--size", "62"], "image size 62x62 does not fit model"),
    (["invert", "{photo}", "--steps", "0"], "--steps must be at least 1; got 0"),
    (["invert", "{photo}", "--opt", "iters"], "method option 'iters' must look like name=value"),
    (["reconstruct", "{corrupt}"], "is not a readable inversion file"),
])
def test_bad_input_gives_one_line_error(args, message, pipeline_dir, photo, tmp_path, capsys):
    corrupt, truncated = tmp_path / "corrupt.png", tmp_path / "truncated.png"
    corrupt.write_bytes(b"this is not an image at all")
    truncated.write_bytes(open(photo, "rb").read()[:200])
    args = [a.format(photo=photo, corrupt=corrupt, truncated=truncated) for a in args]
    if args[0] == "invert":
        args += ["--model", pipeline_dir("sd"), "--steps" if "--steps" not in args else "--dtype", "2" if "--steps" not in args else "float32"]
    code = main(args + ["-o", str(tmp_path / ("o.png" if args[0] == "reconstruct" else "o"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("inversa: error: ") and message in err[0]


def test_unknown_model_fails_in_one_line_without_traceback(photo, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "inversa", "invert", photo, "--model", "no-such-org/no-such-model",
                           "-o", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("inversa: error: cannot load model 'no-such-org/no-such-model'")


def test_grayscale_rgba_and_16bit_images_are_read_faithfully(tmp_path):
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    rgba = np.dstack([np.full((16, 16, 3), 40, np.uint8), np.full((16, 16), 0, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")

    notes = []
    g8, g16 = load_image(str(tmp_path / "g8.png"), notes=notes), load_image(str(tmp_path / "g16.png"), notes=notes)
    assert g8.shape == (1, 3, 16, 16) and torch.allclose(g8, g16, atol=1e-6)
    assert torch.equal(g8[:, 0], g8[:, 2])
    assert torch.allclose(load_image(str(tmp_path / "rgba.png"), notes=notes), torch.ones(1, 3, 16, 16))  # over white
    assert any("16" in n for n in notes) and any("transparent" in n for n in notes)


def test_methods_command_lists_costs_and_options(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "fixed_point" in out and "variant='anderson'" in out and "1 NFE per step" in out


def test_output_piped_into_a_closed_reader_ends_without_traceback():
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    proc = subprocess.Popen([sys.executable, "-m", "inversa.cli", "methods"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader goes away before anything is written, as `| head -0` does
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "Exception" not in err, err
