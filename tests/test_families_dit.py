"""SANA, PixArt-Sigma and HunyuanDiT: load, invert, reconstruct, and the user's stock pipeline replays (float64)."""
import inspect

import pytest
import torch

from inversa import InversaError, invert, reconstruct, stock_callback, stock_scheduler
from inversa.core.metrics import relative_error

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny workloads: one thread beats two contended ones

STEPS = 3
SIZE = 32
FAMILIES = ["sana"]
# guidance 3 where the method inverts under CFG; preciseinv reconstructs unguided (the paper's protocol)
METHODS = {"ddim": (3.0, {}), "fixed_point": (3.0, {"iters": 2}), "preciseinv": (1.0, {"solver": "anderson", "max_iters": 2}),
           "polaris": (3.0, {})}
EXTRA = {"sana": {"use_resolution_binning": False}}  # the stock call's per-family switches (tiny sizes: no binning)
PIPELINES = {"sana": "SanaPipeline"}


def _image():
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=SIZE, mode="bilinear") * 2 - 1


def stock_pipe(model):
    pipe = type(model.pipe).from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_call(model, inv, **kw):
    args = dict(latents=inv.x_T, num_inference_steps=len(inv.timesteps), guidance_scale=inv.guidance,
                height=SIZE, width=SIZE, output_type="latent") | EXTRA[model.family] | kw
    return stock_pipe(model)(inv.prompts, **args).images


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_recognises_the_pipeline(family, tiny_model):
    model = tiny_model(family)
    assert type(model.pipe).__name__ == PIPELINES[family] and model.family == family
    z = model.encode(_image())
    assert z.shape[-1] == SIZE // model.vae_scale and model.decode(z).shape == (1, 3, SIZE, SIZE)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_stock_pipeline_equals_reconstruct(family, method, tiny_model):
    model = tiny_model(family, "float64")
    guidance, kw = METHODS[method]
    inv = invert(model, _image(), "a red circle", method=method, steps=STEPS, guidance=guidance, **kw)
    ours = reconstruct(model, inv, decode=False)
    replay = stock_callback(model.pipe, inv).kwargs if method == "polaris" else {}
    err = float(relative_error(stock_call(model, inv, **replay), ours))
    assert err < 1e-5
    if method == "polaris":  # the per-step scale matters: a constant one lands elsewhere
        assert float(relative_error(stock_call(model, inv), ours)) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_offsets_replay_and_null_text_is_refused(family, tiny_model):
    model = tiny_model(family, "float64")
    inv = invert(model, _image(), "a red circle", method="direct", steps=2, guidance=3.0)
    got = stock_call(model, inv, **stock_callback(model.pipe, inv).kwargs)
    assert float(relative_error(got, reconstruct(model, inv, decode=False))) < 1e-5
    tuned = invert(model, _image(), "a red circle", method="null_text", steps=2, guidance=3.0, iters=1)
    with pytest.raises(InversaError, match="cannot replay a null_text inversion: .*embeds"):
        stock_callback(model.pipe, tuned)


def test_sana_stock_scheduler_is_first_order_flow_dpm_on_the_pipelines_grid(tiny_model):
    model = tiny_model("sana")
    ours, default = stock_scheduler(model.pipe), model.pipe.scheduler
    assert ours.config.solver_order == 1 and ours.config.flow_shift == default.config.flow_shift == 3.0
    default.set_timesteps(4)
    levels = model.schedule(4)
    assert levels.timesteps.tolist() == default.timesteps.tolist()
    assert torch.equal(levels.sigmas.float(), default.sigmas) and float(levels.sigmas[-1]) == 0.0


def test_sana_prompt_gets_the_pipelines_instruction_and_the_negative_does_not(tiny_model):
    model = tiny_model("sana")
    cond = model.condition("a red circle", guidance=3.0)
    chi = inspect.signature(model.pipe.__call__).parameters["complex_human_instruction"].default
    pipe_cond, _, pipe_neg, _ = model.pipe.encode_prompt("a red circle", complex_human_instruction=chi)
    assert torch.equal(cond.cond.hidden, pipe_cond.float()) and torch.equal(cond.uncond.hidden, pipe_neg.float())
    plain = model.pipe.encode_prompt("a red circle", do_classifier_free_guidance=False, complex_human_instruction=None)[0]
    assert not torch.allclose(plain.float(), cond.cond.hidden)


def test_sana_sprint_is_refused_with_the_reason(tiny_model):
    from diffusers import SanaSprintPipeline, SCMScheduler

    from inversa import DiffusersModel

    pipe = tiny_model("sana").pipe
    sprint = SanaSprintPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                                transformer=pipe.transformer, scheduler=SCMScheduler())
    with pytest.raises(InversaError, match="SCMScheduler draws fresh noise"):
        DiffusersModel(sprint)
