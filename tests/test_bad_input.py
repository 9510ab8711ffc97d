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
from inversa.cli.main import main
from inversa.core.errors import InversaError


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
    (["--opt", "eta=-1", "--method", "preciseinv"], "preciseinv option eta must be >= 0.0; got -1"),
    (["--opt", "max_iters=0", "--method", "preciseinv"], "preciseinv option max_iters must be >= 1; got 0"),
    (["--opt", "lr=fast", "--method", "preciseinv"], "preciseinv option lr must be a finite number; got 'fast'"),
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
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
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
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
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

    from inversa.core.checks import invertible
    from inversa.core.types import Schedule

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
    import inversa.io.images

    real, calls = inversa.io.images.save_image, []

    def interrupted(x, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x, path)

    monkeypatch.setattr(inversa.io.images, "save_image", interrupted)
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


# round two (issue 29): each class with instances of its own ---------------------------------------------------------

def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes: a refused command must leave it exactly so."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else None
            out[os.path.relpath(path, folder)] = (st.st_mode, data, os.readlink(path) if os.path.islink(path) else None)
    return out


def refused(capsys, folder, *argv) -> str:
    """``fails`` and nothing under ``folder`` changed, appeared or went."""
    before = snapshot(folder)
    line = fails(capsys, *argv)
    assert snapshot(folder) == before
    return line


@pytest.mark.parametrize("name,changes,message", [
    ("neg_final_alpha", {"alphas": "a[:-1] + [-0.3]"}, "alpha -0.3 at level 2 is outside [0, 1]"),
    ("alpha_above_one", {"alphas": "a[:-1] + [1.5]"}, "alpha 1.5 at level 2 is outside [0, 1]"),
    ("sigma_negative", {"sigmas": "s[:-1] + [-0.01]"}, "sigma -0.01 at level 2 is outside [0, 1]"),
    ("alphas_falling", {"alphas": "[a[1], a[0], a[2]]"}, "alphas are not rising from noise to image"),
    ("sigmas_rising", {"sigmas": "[s[1], s[0], s[2]]"}, "sigmas are not falling from noise to image"),
    ("timesteps_rising", {"timesteps": "t[::-1]"}, "timesteps are not falling"),
    ("timestep_high", {"timesteps": "[5000.0] + t[1:]"}, "timestep 5000 at step 0 is outside model"),
    ("timestep_negative", {"timesteps": "t[:-1] + [-3.0]"}, "timestep -3 at step 1 is outside model"),
    ("timestep_fraction", {"timesteps": "[t[0] + 0.5] + t[1:]"}, "is fractional; model"),
    ("latent_1x1", {"x_T": "x[..., :1, :1]", "z0": None, "image_size": None}, "1x1 latents; model"),
    ("latent_odd", {"x_T": "x[..., :7, :5]", "z0": None, "image_size": None}, "7x5 latents; model"),
    ("latent_5d", {"x_T": "x[None]", "z0": None}, "expected a (batch, channels, height, width) latent"),
    ("latent_3d", {"x_T": "x[0]", "z0": None}, "expected a (batch, channels, height, width) latent"),
])
def test_a_loaded_schedule_and_latent_are_checked_against_the_model(name, changes, message, saved, pipeline_dir,
                                                                    capsys):
    inv = saved[0]
    local = {"x": inv.x_T, "a": list(inv.alphas), "s": list(inv.sigmas), "t": list(inv.timesteps)}
    changes = {k: eval(v, {}, local) if isinstance(v, str) else v for k, v in changes.items()}
    path = variant(saved, name, **changes)
    line = refused(capsys, saved[1], "reconstruct", path, "--model", pipeline_dir("sd"), "-o", saved[1] / "r.png")
    assert message in line


def test_python_reconstruct_and_load_image_share_the_bounds(saved, tiny_model, tmp_path):
    from inversa import reconstruct
    from inversa.io.images import load_image

    with pytest.raises(InversaError, match=r"^steps must be at most 1000; got 100000$"):
        reconstruct(tiny_model("sd"), saved[0], steps=100000)
    with pytest.raises(InversaError, match=r"^size must be at most 4096; got 100000$"):
        load_image(str(saved[1] / "photo.png"), 100000)  # refused before the upscale allocates


@pytest.mark.parametrize("argv,message", [
    (["reconstruct", "{inv}", "--steps", "100000"], "--steps must be at most 1000; got 100000"),
    (["invert", "{img}", "--sample-steps", "1000000"], "--sample-steps must be at most 1000; got 1000000"),
    (["invert", "{img}", "--steps", "1001"], "--steps must be at most 1000; got 1001"),
    (["invert", "{img}", "--size", "100000"], "--size must be at most 4096; got 100000"),
    (["edit", "{img}", "-s", "a", "-t", "b", "--steps", "5000"], "--steps must be at most 1000; got 5000"),
    (["edit", "{img}", "-s", "a", "-t", "b", "--size", "8193"], "--size must be at most 4096; got 8193"),
    (["interpolate", "{img}", "{img}", "--steps", "2000"], "--steps must be at most 1000; got 2000"),
    (["interpolate", "{img}", "{img}", "--size", "-1"], "--size must be at least 0; got -1"),
    (["bench", "--steps", "100000"], "--steps must be at most 1000; got 100000"),
    (["bench", "--sample-steps", "0"], "--sample-steps must be at least 1; got 0"),
    (["bench", "--size", "10000"], "--size must be at most 4096; got 10000"),
    (["invert", "{img}", "--method", "fixed_point", "--opt", "iters=1000000000"],
     "fixed_point option iters must be <= 100000; got 1000000000"),
    (["train-tiny", "--steps", "1000000000"], "--steps must be at most 10000000; got 1000000000"),
])
def test_work_is_bounded_by_one_shared_limit(argv, message, saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    argv = [a.format(inv=variant(saved, "bounds"), img=saved[1] / "photo.png") for a in argv]
    argv += ["-o", str(tmp_path / ("s.sqlite" if argv[0] == "bench" else "o.png" if argv[0] in ("edit", "reconstruct")
                                   else "out"))]
    assert message in refused(capsys, tmp_path, *argv)


@pytest.fixture()
def specials(tmp_path):
    """A fifo, a socket, a folder and a character device, each named like an input file."""
    import socket

    os.mkfifo(tmp_path / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    (tmp_path / "dir.png").mkdir()
    yield {"fifo": (tmp_path / "pipe.png", "a named pipe (fifo)"), "socket": (tmp_path / "sock.png", "a socket"),
           "folder": (tmp_path / "dir.png", "a folder"), "device": ("/dev/null", "a character device")}
    sock.close()


@pytest.mark.parametrize("kind", ["fifo", "socket", "folder", "device"])
def test_inputs_that_are_not_regular_files_are_refused_unopened(kind, specials, saved, pipeline_dir, tmp_path,
                                                                capsys):
    path, what = specials[kind]
    out = tmp_path / "out"
    for argv in (["invert", path, "--model", pipeline_dir("sd"), "-o", out],
                 ["reconstruct", path, "--model", pipeline_dir("sd"), "-o", tmp_path / "r.png"],
                 ["report", path, "-o", out],
                 ["bench", "--captions", path, "--limit", "1", "-o", tmp_path / "s.sqlite"]):
        if kind == "folder" and argv[0] in ("reconstruct", "report"):
            continue  # a folder means something else there (the inversion's folder), checked elsewhere
        line = refused(capsys, tmp_path, *argv)
        assert f"is {what}, not a regular file" in line, line
    line = refused(capsys, tmp_path, "edit", saved[1] / "photo.png", "-s", "a", "-t", "b", "--mask", path,
                   "--model", pipeline_dir("sd"), "--steps", "1", "-o", tmp_path / "e.png")
    assert f"is {what}, not a regular file" in line


def test_a_fifo_in_a_dataset_folder_is_a_failed_item_not_a_hang(tmp_path):
    from inversa.bench.datasets import folder

    os.mkfifo(tmp_path / "b.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    items = folder(str(tmp_path)).items
    assert [i.id for i in items] == ["a.png", "b.png"] and items[0].load(16).shape == (1, 3, 16, 16)
    with pytest.raises(InversaError, match="is a named pipe \\(fifo\\), not a regular file"):
        items[1].load(16)


def test_a_dataset_file_that_links_out_of_its_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    (tmp_path / "data").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", tmp_path / "data" / "x.png")
    line = refused(capsys, tmp_path, "bench", "--data", tmp_path / "data", "-o", tmp_path / "s.sqlite")
    assert "leads outside" in line and "dataset paths must stay inside its folder" in line


def test_outputs_that_are_inputs_are_refused_for_every_command(saved, pipeline_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "x.png")
    os.symlink(tmp_path / "x.png", tmp_path / "link.png")
    os.link(tmp_path / "x.png", tmp_path / "hard.png")
    (tmp_path / "out").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "out" / "x_input.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "out" / "strip.png")
    inv = variant(saved, "alias")
    os.replace(inv, tmp_path / "inv.png")  # an inversion under an image name
    (tmp_path / "caps.txt").write_text("")
    os.symlink(tmp_path / "caps.txt", tmp_path / "store.sqlite")
    edit = ["edit", "-s", "a", "-t", "b", "--steps", "1"]
    cases = [
        edit + ["x.png", "-o", "x.png"], edit + ["x.png", "-o", "./x.png"], edit + ["x.png", "-o", "link.png"],
        edit + ["x.png", "-o", "hard.png"], edit + ["x.png", "--mask", "link.png", "-o", "sub/../link.png"],
        edit + ["x_source.png", "-o", "x.png"],
        ["invert", "x.png", "out/x_input.png", "-o", "out"], ["invert", "./x.png", "out/../out/x_input.png", "-o", "./out/"],
        ["interpolate", "x.png", "out/strip.png", "-o", "out"],
        ["reconstruct", "inv.png", "-o", "./inv.png"],
        ["bench", "--data", str(tmp_path / "out"), "--captions", "caps.txt", "-o", "store.sqlite"],
        ["train-tiny", "--recipe", "lcm", "--base", "out", "-o", "./out"],
    ]
    Image.new("RGB", (64, 64)).save(tmp_path / "x_source.png")
    os.makedirs(tmp_path / "sub")
    for argv in cases:
        line = refused(capsys, tmp_path, *argv)
        assert "is the input" in line and "refusing to overwrite it; choose another -o" in line, (argv, line)


@pytest.mark.parametrize("name,data,message", [
    ("no_file_name", {"images": [{"id": 1}], "annotations": []}, "COCO images[0] needs a file_name string"),
    ("images_dict", {"images": {"1": "a.png"}, "annotations": []}, "COCO images must be a list, not dict"),
    ("list_id", {"images": [{"id": [1], "file_name": "a.png"}], "annotations": []},
     "COCO images[0] needs an integer or string id, got [1]"),
    ("dict_image_id", {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": {}}]},
     "COCO annotations[0] needs an integer or string image_id"),
    ("number_caption", {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": 5}]},
     "COCO annotations[0] caption must be a string, got 5"),
    ("annotation_string", {"images": [], "annotations": ["a cat"]}, "COCO annotations[0] must be an object, not str"),
    ("list_entry", [{"file_name": 3, "caption": "x"}], "entry 0 needs a file_name string and a caption string"),
    ("deep", "[" * 100_000 + "]" * 100_000, "nests 100000 levels deep, over the 64 allowed"),
    ("latin1", b'{"a.png": "caf\xe9"}', "is not UTF-8 text (byte 14); save it as UTF-8"),
    ("latin1_txt", b"a.png\tcaf\xe9 au lait\n", "is not UTF-8 text"),
    ("not_json", "{'a.png': 'x'}", "is not valid JSON"),
])
def test_coco_captions_are_parsed_within_bounds(name, data, message, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    path = tmp_path / (f"{name}.txt" if name.endswith("_txt") else f"{name}.json")
    path.write_bytes(data if isinstance(data, bytes) else (data if isinstance(data, str) else json.dumps(data)).encode())
    line = refused(capsys, tmp_path, "bench", "--captions", path, "--limit", "1", "-o", tmp_path / "s.sqlite")
    assert message in line


def _pie(folder, entries) -> str:
    import json

    os.makedirs(folder / "annotation_images", exist_ok=True)
    Image.new("RGB", (16, 16)).save(folder / "annotation_images" / "a.png")
    (folder / "mapping_file.json").write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return f"pie:{folder}"


GOOD_PIE = {"image_path": "a.png", "original_prompt": "a [cat]", "editing_prompt": "a [dog]", "mask": [0, 10]}


@pytest.mark.parametrize("name,mapping,message", [
    ("list", [GOOD_PIE], "expected an object of id -> edit, not a list"),
    ("empty", {}, "holds no edits"),
    ("entry_list", {"0": [1, 2]}, "entry 0 must be an object, not list"),
    ("number_prompt", {"0": {**GOOD_PIE, "original_prompt": 7}}, "entry 0 field original_prompt must be a string"),
    ("number_target", {"0": {**GOOD_PIE, "editing_prompt": [1]}}, "entry 0 field editing_prompt must be a string"),
    ("number_words", {"0": {**GOOD_PIE, "blended_word": 3}}, "entry 0 field blended_word must be a string"),
    ("type", {"0": {**GOOD_PIE, "editing_type_id": "12"}}, "editing_type_id must be one of 0-9, got '12'"),
    ("negative_run", {"0": {**GOOD_PIE, "mask": [5, -2]}}, "mask value 1 is -2; runs are never negative"),
    ("negative_start", {"0": {**GOOD_PIE, "mask": [-5, 2]}}, "mask value 0 is -5; runs are never negative"),
    ("odd_mask", {"0": {**GOOD_PIE, "mask": [1, 2, 3]}}, "mask has an odd number of values (3)"),
    ("past_end", {"0": {**GOOD_PIE, "mask": [262000, 200]}}, "ends past the 262144 pixels of a 512x512 mask"),
    ("float_run", {"0": {**GOOD_PIE, "mask": [1.5, 2]}}, "mask value 0 is 1.5; runs are whole numbers"),
    ("mask_string", {"0": {**GOOD_PIE, "mask": "0 10"}}, "mask must be a list of start, length pairs, not str"),
    ("extra_mask", {"0": {**GOOD_PIE, "x_source_mask": [0, -1]}}, "x_source_mask value 1 is -1"),
    ("parent", {"0": {**GOOD_PIE, "image_path": "../../x.png"}}, "leads outside"),
    ("absolute", {"0": {**GOOD_PIE, "image_path": "/etc/hostname"}}, "must be relative to annotation_images/"),
    ("path_number", {"0": {**GOOD_PIE, "image_path": 4}}, "field image_path must be a string"),
    ("deep", "{\"0\":" * 5000 + "1" + "}" * 5000, "nests 5000 levels deep"),
])
def test_pie_mappings_are_parsed_within_bounds(name, mapping, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    data = _pie(tmp_path / "pie", mapping)
    line = refused(capsys, tmp_path, "bench", "--data", data, "-o", tmp_path / "s.sqlite")
    assert message in line


def test_pie_image_linked_out_of_the_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    data = _pie(tmp_path / "pie", {"0": {**GOOD_PIE, "image_path": "link.png"}})
    Image.new("RGB", (16, 16)).save(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", tmp_path / "pie" / "annotation_images" / "link.png")
    assert "leads outside" in refused(capsys, tmp_path, "bench", "--data", data, "-o", tmp_path / "s.sqlite")


def test_damaged_store_cells_become_placeholders_with_a_note(tmp_path, capsys):
    import sqlite3

    store = _store_with_rows(tmp_path, "s_images/a/original.png", "s_images/a/original.png")
    with sqlite3.connect(store) as db:
        db.execute("UPDATE results SET psnr = 'high', seconds = 'fast', residuals = '[NaN, 1e999, \"x\"]'")
        db.execute("INSERT INTO results (image, method, config_hash, status, ssim, residuals, finished) "
                   "VALUES ('b', 'ddim', 'h2', 'ok', 'x', 'not json', 1)")
        db.execute("INSERT INTO configs VALUES ('h2', 'ddim', '{broken', '[1, 2]')")
        db.execute("UPDATE configs SET config = '{\"options\": [1, 2]}' WHERE config_hash = 'h1'")
    code, out, err = run_cli(capsys, "report", store, "-o", tmp_path / "r")
    assert code == 0 and "Traceback" not in err, err
    notes = notes_of(err)
    assert "note: store " + store + ": row a/ddim psnr 'high' is damaged; shown as '-'" in notes
    assert any("row a/ddim residuals '[NaN, 1e999, \"x\"]' is damaged" in n for n in notes)
    assert any("row b/ddim ssim 'x' is damaged" in n for n in notes)
    assert any("config h2 config '{broken' is damaged" in n for n in notes)
    assert any("config h2 protocol '[1, 2]' is damaged" in n for n in notes)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "row a/ddim psnr &#x27;high&#x27; is damaged" in page and "| ddim (options=[1, 2]) | h1 | 1/0 | - |" in out


@pytest.mark.parametrize("argv,message", [
    (["edit", "{img}", "-s", "a", "-t", "b", "--blend-threshold", "nan"], "--blend-threshold must be in [0, 1]; got nan"),
    (["edit", "{img}", "-s", "a", "-t", "b", "--blend-threshold", "5"], "--blend-threshold must be in [0, 1]; got 5.0"),
    (["edit", "{img}", "-s", "a", "-t", "b", "--self-replace", "nan"], "--self-replace must be in [0, 1]; got nan"),
    (["edit", "{img}", "-s", "a", "-t", "b", "--inversion-guidance", "-1"], "--inversion-guidance must be a finite"),
    (["invert", "{img}", "--strength", "nan"], "--strength must be in (0, 1]; got nan"),
    (["invert", "{img}", "--embedded-guidance", "inf"], "--embedded-guidance must be a finite number >= 0"),
    (["interpolate", "{img}", "{img}", "--alpha", "nan"], "--alpha must be in [0, 1]; got nan"),
    (["train-tiny", "--minutes", "-1"], "--minutes must be a finite number > 0; got -1.0"),
    (["train-tiny", "--minutes", "nan"], "--minutes must be a finite number > 0; got nan"),
    (["train-tiny", "--vae-minutes", "0"], "--vae-minutes must be a finite number > 0; got 0.0"),
    (["train-tiny", "--checkpoint-every", "0"], "--checkpoint-every must be at least 1; got 0"),
    (["train-tiny", "--dataset-size", "0"], "--dataset-size must be at least 1; got 0"),
    (["train-tiny", "--batch-size", "-4"], "--batch-size must be at least 1; got -4"),
    (["train-tiny", "--vae-steps", "0"], "--vae-steps must be at least 1; got 0"),
    (["train-tiny", "--seed", "-1"], "--seed must be at least 0; got -1"),
    (["train-tiny", "--threads", "0"], "--threads must be at least 1; got 0"),
    (["train-tiny", "--recipe", "lcm", "--base", "{dir}/missing"], "missing is not a model folder"),
    (["bench", "--methods", ""], "--methods '' names no method"),
    (["bench", "--methods", " , "], "--methods ' , ' names no method"),
    (["bench", "--limit", "0"], "--limit must be at least 1; got 0"),
    (["report", "{dir}/s.sqlite", "--max-images", "0"], "--max-images must be at least 1; got 0"),
])
def test_numeric_options_are_bounded(argv, message, saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    from inversa.bench.store import Store

    Store(str(tmp_path / "s.sqlite")).close()
    argv = [a.format(img=saved[1] / "photo.png", dir=tmp_path) for a in argv]
    if argv[0] != "report":
        argv += ["-o", str(tmp_path / ("s2.sqlite" if argv[0] == "bench" else "o.png" if argv[0] == "edit"
                                       else "out"))]
    assert message in refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize("argv,message", [
    (["invert", "{img}", "--device", "meta"], "device 'meta' cannot run inversa; expected cpu, cuda, cuda:N or mps"),
    (["reconstruct", "{img}", "--device", "xla"], "device 'xla' cannot run inversa"),
    (["train-tiny", "--device", "meta"], "device 'meta' cannot run inversa"),
    (["bench", "--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["invert", "{img}", "-o", "/sys/inversa-out"], "cannot write /sys/inversa-out: /sys refuses new files"),
    (["reconstruct", "{img}", "-o", "/sys/r.png"], "cannot write /sys: /sys refuses new files"),
    (["report", "{dir}/s.sqlite", "-o", "/proc/report"], "cannot write /proc/report: /proc refuses new files"),
    (["bench", "-o", "/sys/s.sqlite"], "cannot write /sys: /sys refuses new files"),
])
def test_devices_and_unwritable_outputs_are_one_line(argv, message, saved, tmp_path, capsys, monkeypatch):
    if not os.path.isdir("/sys") or not os.path.isdir("/proc"):
        pytest.skip("no /sys or /proc here")
    monkeypatch.setattr("inversa.cli.common.open_model", lambda args: pytest.fail("model loaded before the check"))
    from inversa.bench.store import Store

    Store(str(tmp_path / "s.sqlite")).close()
    argv = [a.format(img=saved[1] / "photo.png", dir=tmp_path) for a in argv]
    assert message in refused(capsys, tmp_path, *argv)


def test_interpolating_images_of_two_sizes_at_size_0_is_one_line(pipeline_dir, tmp_path, capsys):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (96, 64), (10, 10, 200)).save(tmp_path / "b.png")
    line = refused(capsys, tmp_path, "interpolate", tmp_path / "a.png", tmp_path / "b.png", "--size", "0",
                   "--model", pipeline_dir("sd"), "--steps", "1", "-o", tmp_path / "frames")
    assert "images A (64x64) and B (96x64) differ in size; give --size N to bring both to N x N" in line


def test_silent_conversions_are_noted(tmp_path):
    from inversa.io.images import load_image, read_image

    la = Image.new("LA", (16, 16), (120, 255))
    la.save(tmp_path / "la.png")
    notes = []
    assert read_image(str(tmp_path / "la.png"), notes)[0, 0].tolist() == [120 / 255] * 3
    assert notes == ["grayscale+alpha (LA) image repeated to RGB", "LA image: its alpha channel (fully opaque) dropped"]
    Image.new("RGBA", (16, 16), (1, 2, 3, 255)).save(tmp_path / "rgba.png")
    notes = []
    read_image(str(tmp_path / "rgba.png"), notes)
    assert notes == ["RGBA image: its alpha channel (fully opaque) dropped"]
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(wide).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    notes = []
    arr = read_image(str(tmp_path / "turned.jpg"), notes)
    assert arr.shape == (40, 20, 3) and arr[:15].mean() > 0.9 and arr[25:].mean() < 0.1  # white on top now
    assert notes == ["turned.jpg: EXIF orientation 6 applied (40x20 stored, 20x40 shown)"]
    Image.new("RGB", (64, 64)).save(tmp_path / "sq.png")
    notes = []
    load_image(str(tmp_path / "sq.png"), 65, notes)
    load_image(str(tmp_path / "sq.png"), 32, notes)
    assert notes == ["sq.png: upscaled 1.02x from 64x64 to 65x65", "sq.png: downscaled 0.5x from 64x64 to 32x32"]


# a seeded fuzz of the readers: only InversaError escapes ------------------------------------------------------------

def _junk(rng, depth=0):
    """A random JSON-able value: scalars of every type, NaN and huge numbers, nested lists and objects."""
    kinds = ["int", "neg", "float", "nan", "huge", "str", "none", "bool", "list", "dict"]
    kind = kinds[rng.integers(len(kinds) - (2 if depth > 2 else 0))]
    return {"int": lambda: int(rng.integers(0, 600000)), "neg": lambda: -int(rng.integers(1, 10)),
            "float": lambda: float(rng.normal()), "nan": lambda: float("nan"), "huge": lambda: 1e308 * 10,
            "str": lambda: "../" * int(rng.integers(3)) + "x.png", "none": lambda: None, "bool": lambda: True,
            "list": lambda: [_junk(rng, depth + 1) for _ in range(rng.integers(4))],
            "dict": lambda: {str(k): _junk(rng, depth + 1) for k in range(rng.integers(4))}}[kind]()


def _mutate(rng, value, keys):
    """``value`` (an object) with one to three of ``keys`` replaced by junk, deleted or added."""
    value = dict(value)
    for _ in range(rng.integers(1, 4)):
        key = keys[rng.integers(len(keys))]
        if rng.random() < 0.2:
            value.pop(key, None)
        else:
            value[key] = _junk(rng)
    return value


def test_fuzzed_coco_pie_and_inversion_metadata_raise_only_inversa_errors(saved, tiny_model, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from inversa.bench.datasets import read_captions
    from inversa.bench.pie import load_pie
    from inversa.inversion.api import schedule_of
    from inversa.io.consistency import check_inversion

    rng = np.random.default_rng(29)
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": "a cat"}]}
    for k in range(150):
        data = _mutate(rng, coco, ["images", "annotations", "info"])
        if rng.random() < 0.5 and isinstance(data.get("images"), list):
            data["images"] = [_mutate(rng, {"id": 1, "file_name": "a.png"}, ["id", "file_name"])]
        if rng.random() < 0.5 and isinstance(data.get("annotations"), list):
            data["annotations"] = [_mutate(rng, coco["annotations"][0], ["image_id", "caption"]), _junk(rng)]
        path = tmp_path / f"c{k}.json"
        path.write_text(json.dumps(data if rng.random() < 0.9 else _junk(rng)))
        try:
            assert all(isinstance(v, str) for v in read_captions(str(path)).values())
        except InversaError:
            pass
    pie = tmp_path / "pie"
    for k in range(150):
        entry = _mutate(rng, {**GOOD_PIE, "editing_type_id": "1", "blended_word": "cat dog"},
                        list(GOOD_PIE) + ["editing_type_id", "blended_word", "x_source_mask"])
        _pie(pie, {"0": entry} if rng.random() < 0.9 else _junk(rng))
        try:
            for item in load_pie(str(pie)):
                assert item.mask(8).shape == (1, 1, 8, 8)
                assert os.path.realpath(item.image_path).startswith(os.path.realpath(pie))
        except InversaError:
            pass
    model = tiny_model("sd")
    path = variant(saved, "fuzz")
    with safe_open(path, framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["inversa"]), {k: f.get_tensor(k) for k in f.keys()}
    fields = ["timesteps", "alphas", "sigmas", "prompts", "negative", "guidance", "spacing", "family", "prediction",
              "config", "steps", "stats", "image_size", "method", "model"]
    for k in range(150):
        bad = _mutate(rng, meta, fields)
        if rng.random() < 0.5:  # or only nudge the schedule's numbers
            bad = dict(meta)
            key = ["timesteps", "alphas", "sigmas"][rng.integers(3)]
            values = list(bad[key])
            values[rng.integers(len(values))] = [-1.0, 2.0, 0.5, 1e9, 999.5, -1e-3][rng.integers(6)]
            bad[key] = values
        save_file(tensors, path, metadata={"inversa": json.dumps(bad)})
        try:
            loaded = Inversion.load(path)
            check_inversion(model, loaded)
            schedule_of(model, loaded)
        except InversaError:
            pass
