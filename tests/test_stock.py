"""The user's own diffusers pipeline regenerates inversa's reconstruction (every family, float64)."""
import pytest
import torch

from inversa import InversaError, invert, reconstruct, stock_callback, stock_scheduler
from inversa.core.metrics import relative_error

STEPS = 3
GUIDED = {"sd": 3.0, "sd2v": 3.0, "sdxl": 3.0, "sd3": 3.0, "lcm": 1.0}  # LCM embeds its scale: no CFG
METHODS = {"ddim": {}, "fixed_point": {"iters": 2}, "preciseinv": {"max_iters": 1, "krylov": 2}}  # any x_T replays


def _image():
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=64, mode="bilinear") * 2 - 1


def stock_pipe(model, spacing=None):
    """The user's pipeline with the family's stock deterministic scheduler (LCM: DDIM in the SD pipeline)."""
    from diffusers import StableDiffusionPipeline

    cls = StableDiffusionPipeline if model.family == "lcm" else type(model.pipe)
    pipe = cls.from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe, spacing), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_call(model, inv, **kw):
    w = model.embedded_guidance if model.family == "lcm" else inv.guidance
    args = dict(latents=inv.x_T, num_inference_steps=len(inv.timesteps), guidance_scale=w) | kw
    return stock_pipe(model).__call__(inv.prompts, output_type="latent", **args).images


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", GUIDED)
def test_stock_pipeline_equals_reconstruct(family, method, tiny_model):
    model = tiny_model(family, "float64")
    inv = invert(model, _image(), "a red circle", method=method, steps=STEPS, guidance=GUIDED[family], **METHODS[method])
    ours = reconstruct(model, inv, decode=False)
    assert float(relative_error(stock_call(model, inv), ours)) < 1e-5


def test_final_level_follows_set_alpha_to_one(tiny_model):
    assert float(tiny_model("sd").schedule(2).alphas[-1]) < 1.0  # the SD configs end on alphas_cumprod[0]
    assert float(tiny_model("lcm").schedule(2).alphas[-1]) == 1.0  # this one sets alpha to one


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_spacing_follows_the_stock_scheduler(spacing, tiny_model):
    model = tiny_model("sd")
    ddim = stock_scheduler(model.pipe, spacing)
    ddim.set_timesteps(5)
    assert model.schedule(5, spacing).timesteps.tolist() == ddim.timesteps.tolist()


def test_flow_dynamic_shift_depends_on_resolution(pipeline_dir):
    from inversa import load_model

    model = load_model(pipeline_dir("sd3"))
    model.scheduler.register_to_config(use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096)
    small, large = model.schedule(4, shape=(1, 4, 16, 16)), model.schedule(4, shape=(1, 4, 64, 64))
    ref = stock_scheduler(model.pipe)
    ref.set_timesteps(4, mu=0.5)  # 16 x 16 tokens is the base length: mu = base_shift
    assert torch.allclose(small.sigmas.float(), ref.sigmas) and "mu=0.5" in small.spacing
    assert float(large.sigmas[1]) > float(small.sigmas[1])


def test_sdxl_empty_negative_prompt_is_zeros_like_the_pipeline(tiny_model):
    model = tiny_model("sdxl")
    cond = model.condition(["a red circle", "a blue star"], guidance=3.0, negative=["", "a star"])
    assert float(cond.uncond.hidden[0].abs().max()) == 0.0 and float(cond.uncond.pooled[0].abs().max()) == 0.0
    assert float(cond.uncond.hidden[1].abs().max()) > 0.0


@pytest.mark.parametrize("family", ["sd", "sd3"])
@pytest.mark.parametrize("method,kw", [("polaris", {}), ("null_text", {"iters": 2}), ("direct", {})])
def test_callback_replays_side_state(family, method, kw, tiny_model):
    model = tiny_model(family, "float64")
    images = torch.cat([_image(), -_image()])
    inv = invert(model, images, ["a red circle", "a blue star"], method=method, steps=STEPS, guidance=3.0, **kw)
    replay = stock_callback(model.pipe, inv)
    pipe = stock_pipe(model)
    got = pipe(inv.prompts, output_type="latent", **replay.kwargs).images
    assert float(relative_error(got, reconstruct(model, inv, decode=False)).max()) < 1e-5
    plain = stock_call(model, inv)  # without the callback the side state is lost
    assert float(relative_error(plain, got).max()) > 1e-3


def test_negative_prompt_inversion_replays_through_kwargs(tiny_model):
    model = tiny_model("sd", "float64")
    inv = invert(model, _image(), "a red circle", method="negative_prompt", steps=STEPS, guidance=3.0)
    got = stock_pipe(model)(inv.prompts, output_type="latent", **stock_callback(model.pipe, inv).kwargs).images
    assert float(relative_error(got, reconstruct(model, inv, decode=False))) < 1e-5


@pytest.mark.parametrize("method,why", [("edict", "coupled pair"), ("bdia", "coupled pair"),
                                        ("ddpm_edit_friendly", "noise maps")])
def test_unreplayable_methods_say_why(method, why, tiny_model):
    inv = invert(tiny_model("sd"), _image(), steps=2, method=method)
    with pytest.raises(InversaError, match=f"cannot replay a {method} inversion: .*{why}"):
        stock_callback(tiny_model("sd").pipe, inv)


def test_readme_snippet_runs(monkeypatch, capsys):
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    text = (root / "README.md").read_text()
    code = text.split("<!-- stock-snippet -->\n```python\n")[1].split("```")[0]
    monkeypatch.chdir(root)
    exec(compile(code.replace("steps = 10", "steps = 2"), "README.md", "exec"), {})
    stock, ours = (float(v) for v in capsys.readouterr().out.split()[:2])
    assert stock == pytest.approx(ours, rel=1e-3)
