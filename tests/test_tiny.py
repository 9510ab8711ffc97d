"""The shapes dataset, `inversa train-tiny`, and the embedded default model."""
import json
import os

import numpy as np
import pytest
import torch

from inversa import load_model
from inversa.tiny import shapes as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dataset_is_deterministic_by_seed():
    a, b, c = S.dataset(6, seed=3), S.dataset(6, seed=3), S.dataset(6, seed=4)
    for x, y in zip(a, b):
        assert x.caption == y.caption and np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
    assert [x.caption for x in a] != [x.caption for x in c]
    # an item depends only on (seed, index), not on where the list starts
    assert np.array_equal(S.dataset(2, seed=3, start=4)[0].image, a[4].image)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_captions_describe_the_drawn_object(split):
    for item in S.dataset(40, seed=1, split=split):
        spec = item.spec
        assert item.mask.sum() > 40
        assert S.nearest_colour(np.median(item.image[item.mask], axis=0)) == spec.colour
        ys, xs = np.nonzero(item.mask)
        nearest = min(S.POSITIONS, key=lambda p: (S.POSITIONS[p][0] - xs.mean()) ** 2 + (S.POSITIONS[p][1] - ys.mean()) ** 2)
        assert nearest == spec.position
        corner = item.image[0, 0] if spec.position != "top left" else item.image[-1, 0]
        if spec.background == "plain":
            assert tuple(corner) == S.COLOURS[spec.bg_colours[0]]
        parsed = S.parse_caption(item.caption)
        assert (parsed.shape, parsed.colour, parsed.size, parsed.position, parsed.background, parsed.bg_colours) == \
            (spec.shape, spec.colour, spec.size, spec.position, spec.background, spec.bg_colours)
        assert ((spec.colour, spec.shape, spec.position) in S.HELDOUT) == (split == "heldout")
        assert spec.colour not in spec.bg_colours


def test_mask_dilation_stays_inside_the_image_and_iou_is_exact():
    corner = np.zeros((6, 6), bool)
    corner[0, 0] = True
    grown = S.dilate(corner, 1)
    assert grown.sum() == 4 and grown[:2, :2].all() and not grown[-1].any() and not grown[:, -1].any()
    assert S.iou(corner, grown) == 0.25 and S.iou(corner, ~corner) == 0.0
    assert S.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_caption_words_are_whole_tokens(tmp_path):
    from inversa.tiny.vocab import make_tokenizer

    tok = make_tokenizer(str(tmp_path), S.vocabulary(), max_length=24)
    ids = tok("a small red circle on a blue and green background, top left").input_ids
    assert len(ids) == 2 + 13 and tok.unk_token_id not in ids[1:-1]


@pytest.mark.slow
def test_train_tiny_saves_a_loadable_pipeline_and_resumes(tmp_path):
    from inversa.cli.main import main
    from inversa.tiny import checkpoint

    out = str(tmp_path / "run")
    common = ["train-tiny", "-o", out, "--config", "test", "--vae-steps", "2", "--dataset-size", "8",
              "--batch-size", "4", "--vae-batch-size", "2", "--checkpoint-every", "1", "--no-progress"]
    assert main(common + ["--steps", "2"]) == 0
    assert checkpoint.load(os.path.join(out, "checkpoint-unet.safetensors"))["step"] == 2
    model = load_model(out)
    assert model.default_size() == 64 and model.vae_scale == 2
    assert main(common + ["--steps", "3", "--resume"]) == 0
    state = checkpoint.load(os.path.join(out, "checkpoint-unet.safetensors"))
    assert state["step"] == 3 and state["opt"]["state"]  # optimizer moments came back
    info = json.load(open(os.path.join(out, "training.json")))
    assert info["unet"]["steps"] == 3 and info["vae"]["steps"] == 2 and info["prediction"] == "v_prediction"
    assert info["commands"] == ["inversa " + " ".join(common + ["--steps", s]) + r for s, r in (("2", ""), ("3", " --resume"))]
    assert model.prediction == "v_prediction"
    stages = [line.split(",")[0] for line in open(os.path.join(out, "losses.csv"))]
    assert stages.count("unet") == 3  # two steps, then one more after resuming


def test_embedded_model_is_the_default_and_inverts_a_photo(tmp_path):
    from inversa.cli.main import main
    from inversa.tiny import default_model_path

    folder = default_model_path()
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    assert size < 30e6
    model = load_model(folder)
    assert model.default_size() == 64 and model.family == "sd"
    out = str(tmp_path / "out")
    photo = os.path.join(ROOT, "examples", "astronaut.png")
    assert main(["invert", photo, "-o", out, "--steps", "10"]) == 0  # the README command: preciseinv by default
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert os.path.exists(os.path.join(out, "astronaut_reconstruction.png"))
    assert metrics["psnr"] > metrics["vae_ceiling_psnr"] - 0.1 > 20  # precise inversion reaches the VAE's own limit


def test_every_method_inverts_the_zero_terminal_snr_embedded_model():
    from inversa.core.metrics import relative_error
    from inversa.inversion.api import invert, reconstruct
    from inversa.methods import available, get_method
    from inversa.tiny import default_model_path

    model = load_model(default_model_path())
    photo = os.path.join(ROOT, "examples", "astronaut.png")
    caps = {"preciseinv": {"max_iters": 20}, "spdinv": {"iters": 5}}  # the defaults' 200 / 25 calls add nothing here
    for method in (m for m in available() if not get_method(m).flow_only):  # tests/test_flow.py has the others
        inv = invert(model, photo, "a large red circle on a blue background, center", method=method, steps=3,
                     guidance=1.0 if method == "cfgpp" else 3.0, size=32, **caps.get(method, {}))  # cfgpp: its lam
        assert inv.alphas[0] == 0.0  # the noisiest step holds no signal at all
        z = reconstruct(model, inv, decode=False)
        assert torch.isfinite(inv.x_T).all() and torch.isfinite(z).all(), method
        if method in ("edict", "bdia", "ddpm_edit_friendly", "direct"):  # exact by construction
            assert float(relative_error(z, inv.z0).max()) < 1e-3, method


def test_eval_tiny_scores_the_generators_own_images_as_right_and_shuffled_captions_as_wrong(bench_script):
    et = bench_script("eval_tiny")
    items = S.dataset(20, seed=99, split="heldout")
    right = [et.score(s.image, s.caption) for s in items]
    assert all(r["object_colour"] and r["object_colour_anywhere"] and r["background_colour"] for r in right)
    wrong = [et.score(s.image, items[(i + 1) % 20].caption) for i, s in enumerate(items)]
    assert sum(r["object_colour_anywhere"] for r in wrong) <= 4
    verdict = et._verdict({"heldout": et.summarise(right), "shuffled_control": et.summarise(wrong)})
    assert verdict.startswith("**Status:** the samples follow the captions' object colour, background colour")
