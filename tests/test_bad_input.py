"""Issue 12, nothing silently wrong: every bad input is one ``inversa: error:`` line (exit 2), doubtful
conversions are ``note:`` lines, outputs are whole or absent, and no file read by inversa runs code."""
import dataclasses
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inversa import Inversion, invert
from inversa.cli import main
from inversa.errors import InversaError


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def fails(capsys, *argv) -> str:
    """Run the command line; assert exit 2 with one error line and no traceback; return that line."""
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("inversa: error: "), err
    return lines[0]


def notes_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note: ")]


@pytest.fixture(scope="module")
def saved(pipeline_dir, tmp_path_factory):
    """A 2-step ddim inversion of a photo on the tiny sd pipeline, and a folder to write variants into."""
    from skimage import data

    from inversa import load_model

    folder = tmp_path_factory.mktemp("inv")
    Image.fromarray(data.astronaut()).resize((64, 64)).save(folder / "photo.png")
    inv = invert(load_model(pipeline_dir("sd")), str(folder / "photo.png"), "a photo", steps=2)
    return inv, folder


def variant(saved, name: str, **changes) -> str:
    inv, folder = saved
    return dataclasses.replace(inv, **changes).save(str(folder / f"{name}.safetensors"))


# security ------------------------------------------------------------------------------------------------------

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this opens (creates) the marker file
        return open, (self.marker, "w")


def test_pickled_checkpoint_is_refused_and_never_unpickled(tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    (run / "checkpoint-vae.pt").write_bytes(pickle.dumps({"model": Payload(str(marker))}))
    line = fails(capsys, "train-tiny", "-o", run, "--resume", "--config", "test", "--steps", "1", "--vae-steps", "1")
    assert "checkpoint-vae.pt is a pickled checkpoint, which inversa no longer reads" in line
    assert not marker.exists()


def test_checkpoint_round_trip_keeps_optimizer_state(tmp_path):
    from inversa.tiny import checkpoint

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = str(tmp_path / "c.safetensors")
    checkpoint.save(path, {"model": net.state_dict(), "opt": opt.state_dict(), "step": 7, "done": True})
    back = checkpoint.load(path)
    assert back["step"] == 7 and back["done"] is True and torch.equal(back["model"]["weight"], net.weight)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(back["opt"])  # int-keyed state and tuple betas survive JSON
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _store_with_rows(folder, original: str, recon: str) -> str:
    from inversa.bench.store import Store

    store = str(folder / "s.sqlite")
    images = folder / "s_images" / "a"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "original.png")
    with Store(store) as s:
        s.add_config("h1", "ddim", {"method": "ddim"}, {"model": "m", "dataset": "d"})
        s.write({"image": "a", "method": "ddim", "config_hash": "h1", "status": "ok", "psnr": 30.0, "seconds": 1.0,
                 "original": original, "recon": recon})
    return store


def test_report_reads_only_the_stores_own_images(tmp_path, capsys):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(secret)
    cases = ((str(secret), "s_images/a/original.png"), ("s_images/a/original.png", "../secret.png"),
             ("s_images/../../secret.png", "s_images/a/original.png"))
    for k, (original, recon) in enumerate(cases):
        (tmp_path / str(k)).mkdir()
        store = _store_with_rows(tmp_path / str(k), original, recon)
        out = tmp_path / str(k) / "report"
        code, _, err = run_cli(capsys, "report", store, "-o", out)
        assert code == 0, err
        copied = [(out / "gallery" / f).read_bytes() for f in os.listdir(out / "gallery")] \
            if (out / "gallery").exists() else []
        assert secret.read_bytes() not in copied
        assert "image not found in the store" in (out / "index.html").read_text()


def test_report_of_a_store_moved_without_its_images_stops_before_writing(tmp_path, capsys):
    store = _store_with_rows(tmp_path, "s_images/a/original.png", "s_images/a/original.png")
    os.rename(tmp_path / "s_images", tmp_path / "elsewhere")  # the store moved without its images
    assert "the images of store" in fails(capsys, "report", store, "-o", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_model_path_recorded_in_an_inversion_is_not_opened_unasked(saved, capsys):
    path = variant(saved, "foreign", model="/somewhere/else/evil-model")
    line = fails(capsys, "reconstruct", path, "-o", saved[1] / "r.png")
    assert "made with model '/somewhere/else/evil-model'" in line and "not opened unasked" in line


# inversions that do not fit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,changes,message", [
    ("family", {"family": "sdxl"}, "this inversion was made with"),
    ("channels", {"x_T": "x[:, :3]", "z0": None}, "3-channel latents; model"),
    ("latent", {"image_size": [128, 128]}, "latents for 128x128 images"),
    ("short", {"alphas": "a[:-1]"}, "cut short or edited"),
    ("prompts", {"prompts": ["a", "b"]}, "2 prompts for a batch of 1"),
    ("integer", {"x_T": "x.long()", "z0": None}, "must be a floating-point batch"),
    ("inf", {"x_T": "x * float('inf')", "z0": None}, "holds NaN/inf"),
    ("guidance", {"state": {"guidance_t": torch.tensor([1.0, 2.0]), "guidance_w": torch.tensor([1.0])}},
     "guidance_w (1,) does not match guidance_t (2,)"),
    ("onlyw", {"state": {"guidance_w": torch.tensor([1.0])}}, "only one of guidance_t / guidance_w"),
    ("offsets", {"state": {"offsets": torch.zeros(1, 1, 4, 32, 32)}}, "offsets has shape (1, 1, 4, 32, 32)"),
    ("schedule", {"alphas": "[0.5] + a[1:]"}, "is not model"),
])
def test_reconstruct_refuses_an_inversion_that_does_not_fit(name, changes, message, saved, pipeline_dir, capsys):
    inv = saved[0]
    local = {"x": inv.x_T, "a": list(inv.alphas)}
    changes = {k: eval(v, {}, local) if isinstance(v, str) and k != "family" else v for k, v in changes.items()}
    path = variant(saved, name, **changes)
    line = fails(capsys, "reconstruct", path, "--model", pipeline_dir("sd"), "-o", saved[1] / "r.png")
    assert message in line


def test_reconstruct_with_another_prediction_type_is_refused(saved, pipeline_dir, capsys):
    path = variant(saved, "same")
    line = fails(capsys, "reconstruct", path, "--model", pipeline_dir("sd2v"), "-o", saved[1] / "r.png")
    assert "(sd, epsilon)" in line and "is sd, v_prediction" in line


@pytest.mark.parametrize("edit,message", [
    (lambda meta: meta.update(colour="red"), "unknown inversion field(s) colour"),
    (lambda meta: meta.update(guidance="high"), "inversion field guidance should be float"),
    (lambda meta: meta.update(timesteps=["a"]), "inversion field timesteps should be list[float]"),
    (lambda meta: meta.pop("method"), "inversion field(s) method missing"),
])
def test_tampered_metadata_is_one_line(edit, message, saved, capsys):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = variant(saved, "meta")
    with safe_open(path, framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["inversa"]), {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    save_file(tensors, path, metadata={"inversa": json.dumps(meta)})
    assert message in fails(capsys, "reconstruct", path, "--model", "unused", "-o", saved[1] / "r.png")


# cheap arguments, checked before any model is loaded -------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--opt", "iters=-3", "--method", "fixed_point"], "fixed_point option iters must be >= 1; got -3"),
    (["--opt", "iters=abc", "--method", "fixed_point"], "fixed_point option iters must be an integer; got 'abc'"),
    (["--opt", "variant=bogus", "--method", "fixed_point"],
     "fixed_point option variant must be one of plain, average, anderson; got 'bogus'"),
    (["--opt", "tol=nan", "--method", "fixed_point"], "fixed_point option tol must be a finite number"),
    (["--method", "ddim", "--opt", "speed=2"], "method ddim has no option speed; options: none"),
    (["--guidance", "-5"], "--guidance must be a finite number >= 0 (the guidance scale w: 0 unconditional"),
    (["--guidance", "nan"], "--guidance must be a finite number >= 0"),
    (["--steps", "-1"], "--steps must be at least 1; got -1"),
    (["--strength", "1.5"], "--strength must be in (0, 1]; got 1.5"),
    (["--device", "cuda"], "device cuda: CUDA is not available here"),
    (["--device", "toaster"], "unknown device 'toaster'"),
    (["-o", "{file}"], "is a file; -o names a folder here"),
    (["-o", "{file}/sub"], "is a file, not a folder"),
])
def test_invert_arguments_fail_before_loading_anything(args, message, tmp_path, capsys, monkeypatch):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr("inversa.cli.open_model", lambda args: pytest.fail("model loaded before the check"))
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file") for a in args]
    line = fails(capsys, "invert", "missing.png", "-o", tmp_path / "out", *args)
    assert message in line


@pytest.mark.parametrize("argv,message", [
    (["interpolate", "a.png", "b.png", "--alpha", "0", "2"], "--alpha must be in [0, 1]; got 2.0"),
    (["reconstruct", "x.safetensors", "--steps", "-1"], "--steps must be at least 1; got -1"),
    (["reconstruct", "x.safetensors", "-o", "{dir}"], "is a folder; -o names an image file"),
    (["reconstruct", "x.safetensors", "-o", "{dir}/r.txt"], "must end in one of .png"),
    (["edit", "a.png", "-s", "a", "-t", "b", "--guidance", "inf"], "--guidance must be a finite number >= 0"),
    (["bench", "-o", "{notdb}"], "is not an SQLite results store"),
    (["bench", "--methods", "fixed_point", "--opt", "fixed_point:iters=x"],
     "fixed_point option iters must be an integer; got 'x'"),
    (["report", "{notdb}"], "is not an SQLite results store"),
    (["report", "{dir}/none.sqlite"], "does not exist"),
])
def test_other_commands_check_arguments_first(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.open_model", lambda args: pytest.fail("model loaded before the check"))
    (tmp_path / "notdb.sqlite").write_text("not a database")
    argv = [a.format(dir=tmp_path, notdb=tmp_path / "notdb.sqlite") for a in argv]
    if argv[0] == "bench" and "-o" not in argv:
        argv += ["-o", str(tmp_path / "s.sqlite")]
    assert message in fails(capsys, *argv)


def test_usage_errors_are_one_line_too(capsys):
    assert "argument --steps: invalid int value: 'many'" in fails(capsys, "invert", "a.png", "--steps", "many")


def test_ddpm_pipeline_is_unsupported_in_one_line(tmp_path, photo, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    line = fails(capsys, "invert", photo, "--model", tmp_path / "ddpm", "-o", tmp_path / "o")
    assert "unsupported pipeline DDPMPipeline" in line and "no text encoder" in line


def test_one_step_from_zero_terminal_snr_to_alpha_one_is_explained():
    """One step from alpha 0 to alpha 1 (a set_alpha_to_one schedule) does not depend on x_T at all.
    (Stock SD configs end on alphas_cumprod[0] instead, where the factor is sigma ~ 0.03: invertible.)"""
    import torch

    from inversa.model import Schedule
    from inversa.validate import invertible

    one = Schedule(torch.tensor([999.0]), torch.tensor([0.0, 1.0], dtype=torch.float64),
                   torch.tensor([1.0, 0.0], dtype=torch.float64), "trailing")
    with pytest.raises(InversaError) as err:
        invertible("v_prediction", one)
    line = str(err.value)
    assert "1 step(s) cannot be inverted on this schedule" in line and "use more steps" in line
    assert "weights are broken" not in line


def test_huge_images_are_stopped_on_cpu_with_an_override(pipeline_dir, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INVERSA_MAX_MEGAPIXELS", "0.001")
    line = fails(capsys, "invert", photo, "--model", pipeline_dir("sd"), "--size", "0", "-o", tmp_path / "o")
    assert "64x64 (0.0 megapixels), over the 0.001 megapixel cap on CPU" in line and "INVERSA_MAX_MEGAPIXELS=0" in line


def test_tiny_images_are_refused(tmp_path, capsys):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert "is 1x1 pixels; inversa needs at least 8 a side" in fails(capsys, "invert", tmp_path / "dot.png")


# notes, names and whole outputs --------------------------------------------------------------------------------

def test_invert_notes_crops_frames_and_prompts_and_keeps_same_named_outputs_apart(pipeline_dir, tmp_path, capsys):
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    Image.new("RGB", (100, 60), (200, 30, 30)).save(tmp_path / "x" / "a.png")
    frames = [Image.new("RGB", (16, 16), c) for c in ((0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "y" / "a.gif", save_all=True, append_images=frames[1:])
    prompt = "a zebra " + "red " * 80
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "invert", tmp_path / "x" / "a.png", tmp_path / "y" / "a.gif", "--model",
                           pipeline_dir("sd"), "--steps", "1", "--prompt", prompt, "-o", out)
    assert code == 0, err
    notes = notes_of(err)
    assert "note: a.png: 100x60 centre-cropped to 60x60 (40 px of its width cut)" in notes
    assert "note: a.png: upscaled 1.1x from 60x60 to 64x64" in notes
    assert "note: a.gif: animated image with 2 frames; only the first is used" in notes
    assert any("zebra not in the model's vocabulary" in n for n in notes)
    assert any("is 86 tokens; the model reads 75, dropping 'red red" in n for n in notes)
    assert sorted(os.listdir(out)) == ["a-2_input.png", "a-2_reconstruction.png", "a_input.png",
                                       "a_reconstruction.png", "inversion.safetensors", "metrics.json"]


def test_python_invert_sizes_paths_like_the_cli(tiny_model, tmp_path):
    Image.new("RGB", (102, 60), (10, 200, 10)).save(tmp_path / "wide.png")  # 102 is no multiple of 4
    model = tiny_model("sd")
    assert invert(model, str(tmp_path / "wide.png"), steps=1).image_size == [64, 64]
    with pytest.raises(InversaError, match="does not fit model"):
        invert(model, str(tmp_path / "wide.png"), steps=1, size=0)


def test_ctrl_c_while_writing_leaves_no_partial_item(pipeline_dir, photo, tmp_path, capsys, monkeypatch):
    import inversa.images

    real, calls = inversa.images.save_image, []

    def interrupted(x, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x, path)

    monkeypatch.setattr(inversa.images, "save_image", interrupted)
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "invert", photo, "--model", pipeline_dir("sd"), "--steps", "1", "-o", out)
    assert code == 130 and len(calls) == 2
    assert not out.exists() or os.listdir(out) == []  # not even the inversion saved before the PNGs


def test_safe_names_keep_distinct_items_apart():
    from inversa.bench.runner import safe_name

    assert safe_name("a b.png") != safe_name("a_b.png") and safe_name("a_b.png") == "a_b.png"


def test_bench_store_refuses_another_dataset_and_counts_only_new_rows(pipeline_dir, tmp_path, capsys, monkeypatch):
    from inversa.bench.store import Store

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (64, 64), (90, 90, 200)).save(tmp_path / name / "p.png")
    store = tmp_path / "s.sqlite"
    common = ["bench", "--model", pipeline_dir("sd"), "--methods", "ddim", "--steps", "1", "-o", store]
    code, _, err = run_cli(capsys, *common, "--data", tmp_path / "one")
    assert code == 0 and "bench[0/1]: 2 rows written, 0 already done" in err
    line = fails(capsys, *common, "--data", tmp_path / "two")
    assert f"holds results for dataset one, data {tmp_path / 'one'}; this run is for dataset two" in line
    assert "write it to another store (-o)" in line
    monkeypatch.setattr(Store, "done", lambda self: set())  # as if another worker wrote the rows meanwhile
    code, _, err = run_cli(capsys, *common, "--data", tmp_path / "one")
    assert code == 0 and "bench[0/1]: 0 rows written, 2 already done" in err


def test_no_temporary_files_are_left_behind(saved):
    assert not [f for f in os.listdir(saved[1]) if ".tmp" in f]


def test_a_real_process_prints_no_traceback(photo, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inversa", "invert", photo, "--opt", "iters=abc", "--method",
                           "fixed_point", "-o", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "inversa: error: fixed_point option iters must be an integer; got 'abc'"
