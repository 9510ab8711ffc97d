"""Video families (Wan, CogVideoX, LTX-Video): 5-D latents through the methods, and the stock pipelines regenerate them."""
import numpy as np
import pytest
import torch

from inversa import InversaError, invert, reconstruct, stock_scheduler
from inversa.core.metrics import relative_error
from inversa.models.diffusers import ltx
from inversa.models.diffusers.cogvideox import from_pipeline, to_pipeline

FRAMES = {"wan": 5, "cogvideox": 9, "ltx": 5}  # Wan's and the tiny LTX's VAE take 4k+1 frames, CogVideoX's 8k+1
STEPS = 4  # divides 1000: CogVideoX's DDIM steps t -> t - 1000 // N
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second contended thread only waits
METHODS = {"ddim": {}, "fixed_point": {"iters": 2}, "preciseinv": {"max_iters": 1, "krylov": 2}}


def clip(frames: int, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, frames, 4, 4, generator=g), size=(frames, size, size),
                                           mode="trilinear") * 2 - 1


def stock_call(model, inv):
    """The user's pipeline with its stock deterministic scheduler, from ``latents=x_T``, as latents (B, C, F, H, W)."""
    pipe = type(model.pipe).from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    _, _, f, h, w = inv.x_T.shape
    to, back = {"cogvideox": (to_pipeline, from_pipeline),
                "ltx": (ltx.pack, lambda tokens: ltx.unpack(tokens, f, h, w))}.get(model.family, (None, None))
    out = pipe(inv.prompts, latents=to(inv.x_T) if to else inv.x_T, num_inference_steps=len(inv.timesteps),
               guidance_scale=inv.guidance, num_frames=(f - 1) * model.temporal + 1, height=h * model.vae_scale,
               width=w * model.vae_scale, output_type="latent").frames
    return back(out) if back else out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FRAMES)
def test_stock_pipeline_regenerates_the_inversion(family, method, tiny_model):
    model = tiny_model(family, "float64")
    inv = invert(model, clip(FRAMES[family]), "a red circle", method=method, steps=STEPS, guidance=3.0,
                 **METHODS[method])
    assert inv.x_T.ndim == 5 and inv.x_T.shape[2] == (FRAMES[family] - 1) // 4 + 1
    ours = reconstruct(model, inv, decode=False)
    assert float(relative_error(stock_call(model, inv), ours)) < 1e-5


def test_stock_callback_says_how_to_replay_a_video(tiny_model):
    from inversa import stock_callback

    model = tiny_model("cogvideox")
    inv = invert(model, clip(9), steps=2, method="direct", guidance=3.0)
    with pytest.raises(InversaError, match="CogVideoXPipeline.*to_pipeline"):
        stock_callback(model.pipe, inv)


@pytest.mark.parametrize("family,frames,hint", [("wan", 6, "4k\\+1 frames \\(e.g. 5 or 9"),
                                                 ("cogvideox", 5, "8k\\+1 frames \\(e.g. 1 or 9")])
def test_frame_count_must_fit_the_vae(family, frames, hint, tiny_model):
    with pytest.raises(InversaError, match=f"a clip of {frames} frames does not fit .*{hint}"):
        invert(tiny_model(family), clip(frames), steps=2, method="ddim")


@pytest.mark.parametrize("method", ["rf_solver", "fireflow"])
def test_flow_methods_refuse_cogvideox_and_run_on_wan_and_ltx(method, tiny_model):
    with pytest.raises(InversaError, match=f"{method} needs a flow-matching model"):
        invert(tiny_model("cogvideox"), clip(9), steps=2, method=method)
    for family in ("wan", "ltx"):
        inv = invert(tiny_model(family), clip(5), steps=2, method=method)
        assert inv.x_T.shape == (1, 4, 2, 4, 4)


def test_wan_unipc_config_replays_as_euler_on_its_flow_shift(pipeline_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from inversa import load_model

    model = load_model(pipeline_dir("wan"))  # a fresh copy: its scheduler is swapped below
    model.pipe.scheduler = model.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                                     use_flow_sigmas=True, flow_shift=5.0)
    stock = stock_scheduler(model.pipe)
    ref = FlowMatchEulerDiscreteScheduler(shift=5.0)
    ref.set_timesteps(4)
    assert type(stock).__name__ == "FlowMatchEulerDiscreteScheduler" and stock.config.shift == 5.0
    assert torch.allclose(model.schedule(4).sigmas.float(), ref.sigmas)
    other = FlowMatchEulerDiscreteScheduler(shift=3.0)  # the tiny pipeline's own shift: not what UniPC says
    other.set_timesteps(4)
    assert not torch.allclose(model.schedule(4).sigmas.float(), other.sigmas)


def test_ltx_packs_as_the_pipeline_and_shifts_by_its_token_count(tiny_model):
    from diffusers import LTXPipeline

    model = tiny_model("ltx")
    x = torch.randn(2, 4, 3, 4, 6)
    assert torch.equal(ltx.pack(x), LTXPipeline._pack_latents(x)) and torch.equal(ltx.unpack(ltx.pack(x), 3, 4, 6), x)
    assert torch.equal(ltx.pack(x[..., :4], 2, 1), LTXPipeline._pack_latents(x[..., :4], 2, 1))
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    ref, cfg = stock_scheduler(model.pipe), model.pipe.scheduler.config
    for shape in ((1, 4, 2, 4, 4), (1, 4, 3, 8, 6)):  # the pipeline's mu of its token count F H W
        tokens = shape[2] * shape[3] * shape[4]
        assert model.shift_mu(shape) == pytest.approx(calculate_shift(
            tokens, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift))
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4), mu=model.shift_mu((1, 4, 2, 4, 4)))
    assert abs(float(ref.sigmas[-2]) - 0.1) < 1e-6  # the config's shift_terminal stretch
    assert torch.allclose(model.schedule(4, shape=(1, 4, 2, 4, 4)).sigmas.float(), ref.sigmas)
