"""FLUX.1: packing, the resolution-dependent shift and stock FluxPipeline parity on tiny random pipelines."""
import math

import pytest
import torch

from inversa import invert, load_model, reconstruct, stock_callback
from inversa.cli.main import main
from inversa.core.errors import InversaError
from inversa.core.metrics import relative_error
from inversa.models.diffusers.flux import image_ids, pack, unpack

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=1, height=64, width=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear") * 2 - 1


def _stock(model, prompt, x_T, steps, **kw):
    """The user's own pipeline sampling from ``x_T``, unpacked back to (B, C, H, W)."""
    h, w = x_T.shape[-2:]
    out = model.pipe(prompt, latents=pack(x_T), num_inference_steps=steps, height=h * model.vae_scale,
                     width=w * model.vae_scale, output_type="latent", **kw).images
    return unpack(out, h, w)


def _stock_levels(model, steps, height, width):
    """(timestep, network time, sigma) of each step of a stock call, recorded at the transformer's input."""
    seen = []
    hook = model.net.register_forward_pre_hook(lambda mod, args, kw: seen.append(float(kw["timestep"][0])),
                                               with_kwargs=True)
    try:
        cb = lambda pipe, i, t, kw: (seen.append((float(t), float(pipe.scheduler.sigmas[i]))), {})[1]  # noqa: E731
        model.pipe("", height=height, width=width, num_inference_steps=steps, output_type="latent",
                   callback_on_step_end=cb)
    finally:
        hook.remove()
    return [(t, net_t, s) for net_t, (t, s) in zip(seen[0::2], seen[1::2])]


def test_packing_round_trips_and_matches_the_pipeline():
    from diffusers import FluxPipeline

    x = torch.randn(2, 4, 6, 10)
    tokens = pack(x)
    assert tokens.shape == (2, 15, 16) and torch.equal(unpack(tokens, 6, 10), x)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 2, 4, 6, 10))
    assert torch.equal(image_ids(3, 5), FluxPipeline._prepare_latent_image_ids(1, 3, 5, "cpu", torch.float32))


def test_shift_is_linear_in_the_token_count(tiny_model):
    model = tiny_model("flux")  # 0.5 at 256 tokens (a 32x32 latent) to 1.15 at 4096 (the default 256 px image)
    assert model.shift_mu((1, 4, 32, 32)) == 0.5 and model.shift_mu(None) == pytest.approx(1.15)
    assert model.shift_mu((1, 4, 16, 16)) == pytest.approx(0.5 - 0.65 * 192 / 3840)


@pytest.mark.parametrize("variant,size", [("flux", (64, 64)), ("flux", (32, 96)), ("flux-schnell", (64, 64))])
def test_schedule_and_network_time_follow_the_stock_pipeline(pipeline_dir, variant, size):
    model = load_model(pipeline_dir(variant))
    h, w = size
    sched = model.schedule(4, shape=(1, 4, h // 2, w // 2))
    stock = _stock_levels(model, 4, h, w)
    assert sched.timesteps.tolist() == [t for t, _, _ in stock]
    assert sched.sigmas[:-1].tolist() == [s for _, _, s in stock] and float(sched.sigmas[-1]) == 0.0
    seen = []
    hook = model.net.register_forward_pre_hook(lambda mod, a, kw: seen.append(float(kw["timestep"][0])), with_kwargs=True)
    invert(model, _images(1, h, w).float(), method="ddim", steps=4)
    hook.remove()
    assert sorted(seen) == sorted(net_t for _, net_t, _ in stock)  # shifted sigma, never i/N
    if variant == "flux":  # the shift of this resolution: 0.5 at 256 tokens, less for 96 tokens
        mu = model.shift_mu((1, 4, h // 2, w // 2))
        s = 1 - 1 / 4
        assert float(sched.sigmas[1]) == pytest.approx(math.exp(mu) / (math.exp(mu) + 1 / s - 1), rel=1e-6)
        assert sched.spacing == f"flow(shift=3.0, mu={mu:.4g})"
    else:
        assert sched.sigmas[:-1].tolist() == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize("method,cfg", [("ddim", {}), ("fixed_point", {"iters": 4}), ("preciseinv", {})])
def test_stock_pipeline_reproduces_the_reconstruction(tiny_model, method, cfg):
    model = tiny_model("flux", "float64")
    inv = invert(model, _images(2), ["a red circle", "a blue star"], method=method, steps=4, **cfg)
    ours = reconstruct(model, inv, decode=False)
    stock = _stock(model, ["a red circle", "a blue star"], inv.x_T, 4, guidance_scale=3.5)
    assert relative_error(stock, ours).max() < 1e-5
    if method == "preciseinv":  # and it is the image: the stock sampler lands on z0
        assert relative_error(stock, inv.z0).max() < 1e-5


def test_true_cfg_embedded_guidance_and_schnell_match_the_stock_pipeline(pipeline_dir):
    model = load_model(pipeline_dir("flux"), dtype="float64", embedded_guidance=2.0)
    inv = invert(model, _images(1, 32, 96), "a red circle", method="ddim", steps=3, guidance=2.5, negative="a blue star")
    stock = _stock(model, "a red circle", inv.x_T, 3, guidance_scale=2.0, true_cfg_scale=2.5, negative_prompt="a blue star")
    assert inv.stats["nfe"] == 6 and relative_error(stock, reconstruct(model, inv, decode=False)).max() < 1e-5
    schnell = load_model(pipeline_dir("flux-schnell"), dtype="float64")
    inv = invert(schnell, _images(1), "a red circle", method="fixed_point", steps=2, iters=3)
    stock = _stock(schnell, "a red circle", inv.x_T, 2, guidance_scale=0.0)
    assert relative_error(stock, reconstruct(schnell, inv, decode=False)).max() < 1e-5
    with pytest.raises(InversaError, match="stock_callback does not drive FluxPipeline; .*pack"):
        stock_callback(schnell.pipe, inv)


def test_float32_parity_and_shift_terminal(pipeline_dir, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    pipe = FluxPipeline.from_pretrained(pipeline_dir("flux"), local_files_only=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift_terminal=0.1)
    pipe.save_pretrained(tmp_path / "terminal")
    model = load_model(str(tmp_path / "terminal"))
    inv = invert(model, _images(1).float(), "a red circle", method="preciseinv", steps=4)
    assert float(inv.sigmas[-2]) == pytest.approx(0.1, rel=1e-6)
    stock = _stock(model, "a red circle", inv.x_T, 4)
    assert relative_error(stock, reconstruct(model, inv, decode=False)).max() < 1e-5


def test_cli_inverts_and_reconstructs_a_flux_folder(pipeline_dir, photo, tmp_path, capsys):
    folder = pipeline_dir("flux")
    out = tmp_path / "inv"
    assert main(["invert", photo, "--model", folder, "--method", "preciseinv", "--steps", "3", "--size", "64",
                 "--embedded-guidance", "2", "-o", str(out)]) == 0
    assert main(["reconstruct", str(out / "inversion.safetensors"), "--model", folder,
                 "-o", str(tmp_path / "rec.png")]) == 0
    assert (tmp_path / "rec.png").is_file()
    assert main(["invert", photo, "--model", folder, "--size", "62", "-o", str(out)]) == 2
    assert "multiples of 4" in capsys.readouterr().err


def test_odd_sizes_and_channel_conditioned_variants_are_refused(tiny_model):
    from diffusers import FluxControlPipeline

    from inversa import DiffusersModel
    from inversa.tiny.random_pipelines import build_pipeline

    with pytest.raises(InversaError, match="multiples of 4"):
        tiny_model("flux").encode(torch.zeros(1, 3, 64, 66))
    parts = build_pipeline("flux").components
    parts["transformer"].register_to_config(in_channels=32)  # Control/Fill transformers take extra channels
    control = FluxControlPipeline(**{k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")})
    with pytest.raises(InversaError, match="unsupported FLUX pipeline FluxControlPipeline: .*extra"):
        DiffusersModel(control)


def test_every_flow_method_inverts_and_replays_on_flux(tiny_model):
    """The flow methods see (B, C, H, W) latents; packing stays inside the family."""
    model = tiny_model("flux")
    errors = {}
    for method in ("ddim", "rf_solver", "fireflow", "uni_inv", "rf_inversion"):
        inv = invert(model, _images(1), "a red circle", method=method, steps=3)
        z = reconstruct(model, inv, decode=False)
        assert torch.isfinite(z).all(), method
        errors[method] = float(relative_error(z, inv.z0).max())
    assert errors["rf_solver"] < errors["ddim"] / 2 and errors["fireflow"] < errors["ddim"] / 2, errors  # 2.7x, 4.3x
    assert errors["uni_inv"] < errors["ddim"], errors
