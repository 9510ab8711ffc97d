"""The embedded model's siblings: ``train-tiny --recipe lcm|flow`` and the shipped ``embedded-lcm`` / ``embedded-flow``."""
import json
import os

import pytest
import torch

from inversa import load_model
from inversa.tiny import EMBEDDED, checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A minuscule untrained v-prediction zero-SNR StableDiffusionPipeline (the base recipe's test config)."""
    from diffusers import StableDiffusionPipeline

    from inversa.tiny.train import build_parts

    vae, unet, text, tok, sched = build_parts("test")
    folder = str(tmp_path_factory.mktemp("base") / "model")
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("recipe, family, stage", [("lcm", "lcm", "lcm"), ("flow", "sd3", "flow")])
def test_sibling_recipe_trains_resumes_and_loads(tmp_path, tiny_base, recipe, family, stage):
    from inversa.cli.main import main

    out = str(tmp_path / recipe)
    common = ["train-tiny", "--recipe", recipe, "--base", tiny_base, "-o", out, "--config", "test", "--dataset-size", "4",
              "--batch-size", "2", "--checkpoint-every", "1", "--no-progress"]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "3", "--resume"]) == 0
    state = checkpoint.load(os.path.join(out, f"checkpoint-{stage}.safetensors"))
    assert state["step"] == 3 and state["opt"]["state"]  # optimizer moments came back
    info = json.load(open(os.path.join(out, "training.json")))
    assert info["recipe"] == recipe and info[stage]["steps"] == 3 and len(info["commands"]) == 2
    assert [line.split(",")[0] for line in open(os.path.join(out, "losses.csv"))] == [stage] * 3
    model = load_model(out)
    assert model.family == family and model.default_size() == 64
    pipe = model.pipe
    images = pipe(["a small red circle on a blue background, center"], num_inference_steps=2, guidance_scale=3.0,
                  output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3)


def test_lcm_student_starts_as_the_teacher(tiny_base):
    """The guidance input is zero-initialised: before training the student's output is the teacher's."""
    from diffusers import UNet2DConditionModel

    from inversa.tiny.train_lcm import COND_DIM, student_from

    teacher = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    student = student_from(teacher)
    x, hid = torch.randn(2, 4, 32, 32), torch.randn(2, 24, teacher.config.cross_attention_dim)
    with torch.no_grad():
        same = student(x, 500, encoder_hidden_states=hid, timestep_cond=torch.randn(2, COND_DIM)).sample
        assert torch.allclose(same, teacher(x, 500, encoder_hidden_states=hid).sample, atol=1e-6)


def test_lcm_boundary_condition_is_the_identity_at_t0():
    from inversa.tiny.train_lcm import boundary

    c_skip, c_out = boundary(torch.tensor([0, 999]))
    assert c_skip.flatten().tolist()[0] == 1.0 and c_out.flatten().tolist()[0] == 0.0
    assert c_skip.flatten()[1] < 1e-7 and abs(c_out.flatten()[1] - 1) < 1e-7


def test_shipped_siblings_load_by_short_name_and_folder_within_the_size_budget():
    size = sum(os.path.getsize(os.path.join(d, f)) for folder in EMBEDDED.values() for d, _, fs in os.walk(folder)
               for f in fs)
    assert size <= 45e6
    lcm = load_model("embedded-lcm")
    assert lcm.family == "lcm" and lcm.embedded_guidance == 3.0 and lcm.dtype == torch.float32
    assert load_model(EMBEDDED["embedded-lcm"]).embedded_guidance == 3.0  # by folder too
    assert load_model("embedded-flow").family == "sd3"


@pytest.mark.parametrize("model", ["embedded-lcm", "embedded-flow"])
def test_cli_inverts_a_photo_with_a_shipped_sibling(tmp_path, model):
    from inversa.cli.main import main

    out = str(tmp_path / "out")
    photo = os.path.join(ROOT, "examples", "astronaut.png")
    assert main(["invert", photo, "-o", out, "--model", model, "--steps", "4"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["psnr"] > metrics["vae_ceiling_psnr"] - 1.0 > 19
