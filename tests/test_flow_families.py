"""FLUX.2, Qwen-Image, Chroma, FLUX.1 Kontext, ...: invert, reconstruct and stock parity on tiny random pipelines.

Each family's own stock pipeline, called with ``latents=x_T`` (packed the way the pipeline
takes them) and the stock deterministic scheduler, must regenerate inversa's reconstruction
to 1e-5 relative in float64.
"""
import pytest
import torch

from inversa import InversaError, invert, reconstruct, stock_callback, stock_scheduler
from inversa.core.metrics import relative_error
from inversa.models.diffusers import flux, flux2

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3
SIZE = 32  # pixels: 8x8 model latents for FLUX.2 (VAE x2, patchify x2), 16x16 packed 2x2 for the others
TOKENS = 64  # text tokens of the families that pad prompts: 512 would spend the suite's time in the text encoders
SINGLE_STREAM = ("lumina2", "zimage")  # text and image tokens in one self-attention: nothing to inject into
PADDED = ("flux2", "flux2-klein", "chroma", "kontext", "lumina2", "zimage")
REPLAYABLE = {"ddim": {}, "fixed_point": {"iters": 2}, "preciseinv": {"max_iters": 1, "krylov": 2},
              "uni_inv": {}, "rf_inversion": {}}  # their x_T is sampled by the plain Euler step
OWN_SAMPLER = ("rf_solver", "fireflow")  # second-order samplers: inversa reconstructs, a stock Euler loop cannot


def _image(seed=0, size=SIZE):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64), size=size,
                                           mode="bilinear") * 2 - 1


@pytest.fixture
def flow_model(tiny_model):
    """A tiny float64 model of ``family`` whose prompts are encoded at :data:`TOKENS` tokens (the stock call too)."""

    def get(family):
        model = tiny_model(family, "float64")
        if family in PADDED:
            model.max_sequence_length = 4 * TOKENS if family == "flux2" else TOKENS  # [dev]'s system message is long
        return model

    return get


def stock_pipe(model):
    pipe = type(model.pipe).from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_latents(model, prompts, x_T, steps, **kw):
    """The user's own pipeline from ``x_T``, its final latent back in the (B, C, H, W) space the methods see."""
    h, w = x_T.shape[-2:]
    size = dict(height=h * model.vae_scale, width=w * model.vae_scale, num_inference_steps=steps, output_type="latent",
                max_sequence_length=model.max_sequence_length)
    pipe = stock_pipe(model)
    if model.family in ("lumina2", "zimage"):  # unpacked latents
        return pipe(prompt=prompts, latents=x_T, **size, **kw).images
    if model.family == "flux2":  # takes the patchified latent; [dev] returns its tokens, [klein] the raw VAE latent
        out = pipe(prompt=prompts, latents=x_T, **size, **kw).images
        return flux2.untokens(out, h, w) if out.ndim == 3 else flux2.to_model_latent(model.vae, out)
    if model.family == "flux-kontext":  # the reference as a latent; max_area, or it renders at 1024x1024
        kw = {"image": model.reference, "max_area": size["height"] * size["width"], **kw}
    return flux.unpack(pipe(prompt=prompts, latents=flux.pack(x_T), **size, **kw).images, h, w)


FAMILY_CALLS = {  # family -> (guidance for invert, stock call keywords)
    "flux2": (1.0, {"guidance_scale": 4.0}),  # [dev]: distilled guidance (the model's default 4.0), no CFG
    "flux2-klein": (2.0, {"guidance_scale": 2.0}),
    "qwenimage": (2.0, {"true_cfg_scale": 2.0, "negative_prompt": ""}),
    "chroma": (2.0, {"guidance_scale": 2.0}),
    "kontext": (2.0, {"guidance_scale": 3.5, "true_cfg_scale": 2.0, "negative_prompt": ""}),
    "lumina2": (2.0, {"guidance_scale": 2.0}),
    "zimage": (2.0, {"guidance_scale": 1.0}),  # its scale counts from 0: w = guidance_scale + 1
}


@pytest.mark.parametrize("method", REPLAYABLE)
@pytest.mark.parametrize("family", FAMILY_CALLS)
def test_stock_pipeline_regenerates_the_inversion(family, method, flow_model):
    model = flow_model(family)
    guidance, kw = FAMILY_CALLS[family]
    inv = invert(model, _image(), "a red circle", method=method, steps=STEPS, guidance=guidance, **REPLAYABLE[method])
    ours = reconstruct(model, inv, decode=False)
    stock = stock_latents(model, ["a red circle"], inv.x_T, STEPS, **kw)
    assert float(relative_error(stock, ours).max()) < 1e-5


@pytest.mark.parametrize("family", FAMILY_CALLS)
def test_second_order_samplers_reconstruct_closer_than_euler(family, flow_model):
    model = flow_model(family)
    errors = {}
    for method in ("ddim",) + OWN_SAMPLER:
        inv = invert(model, _image(), "a red circle", method=method, steps=STEPS)
        errors[method] = float(relative_error(reconstruct(model, inv, decode=False), inv.z0).max())
    assert all(errors[m] < errors["ddim"] for m in OWN_SAMPLER), errors


def _network_times(model, run):
    seen = []
    def record(mod, args, kw):  # Z-Image's transformer takes (x, t, captions) positionally
        seen.append(float((kw["timestep"] if "timestep" in kw else args[1])[0]))

    hook = model.net.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("family", FAMILY_CALLS)
def test_schedule_and_network_time_follow_the_stock_pipeline(family, flow_model):
    model = flow_model(family)
    z = model.encode(_image())
    sched = model.schedule(4, shape=z.shape)
    levels = []
    cb = lambda p, i, t, kw: (levels.append((float(t), float(p.scheduler.sigmas[i]))), {})[1]  # noqa: E731
    stock_t = _network_times(model, lambda: stock_latents(model, [""], torch.randn_like(z), 4, callback_on_step_end=cb,
                                                          **{k: 1.0 for k in FAMILY_CALLS[family][1]}))
    assert sched.timesteps.tolist() == [t for t, _ in levels] and sched.sigmas[:-1].tolist() == [s for _, s in levels]
    ours = _network_times(model, lambda: invert(model, _image(), method="ddim", steps=4))
    assert sorted(ours) == sorted(stock_t) and max(ours) <= 1.0  # the network takes sigma, never t or i/N


def test_flux2_latent_is_the_patchified_batch_normalised_vae_latent(flow_model):
    from diffusers import Flux2KleinPipeline as P

    model = flow_model("flux2-klein")
    z = torch.randn(2, 4, 6, 10, dtype=torch.float64)
    assert torch.equal(flux2.patchify(z), P._patchify_latents(z)) and torch.equal(flux2.unpatchify(flux2.patchify(z)), z)
    assert torch.equal(flux2.latent_ids(3, 5), P._prepare_latent_ids(torch.zeros(1, 1, 3, 5))[0])
    x = flux2.to_model_latent(model.vae, z)
    mean, std = flux2.bn_stats(model.vae, x)
    assert float(mean.abs().max()) > 0.1 and torch.allclose(flux2.to_vae_latent(model.vae, x), z)
    assert model.encode(_image()).shape == (1, 16, 8, 8) and model.vae_scale == 4
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    for tokens, steps in ((64, 3), (4096, 28), (5000, 50)):
        assert flux2.empirical_mu(tokens, steps) == compute_empirical_mu(tokens, steps)


@pytest.mark.parametrize("family", FAMILY_CALLS)
def test_side_state_replay_is_refused_with_the_reason(family, flow_model):
    model = flow_model(family)
    inv = invert(model, _image(), "a red circle", method="polaris", steps=2, guidance=2.0)
    with pytest.raises(InversaError, match="cannot replay a polaris inversion: .+; use inversa.reconstruct"):
        stock_callback(model.pipe, inv)


def test_qwenimage_pads_prompts_to_one_length_and_rescales_guidance(flow_model):
    from inversa.models.diffusers.qwenimage import pad_tokens, token_norms

    model = flow_model("qwenimage")
    short, long = model.encode_prompt(["a"]), model.encode_prompt(["a red circle on a blue background"])
    assert short.hidden.shape[1] < long.hidden.shape[1] and bool(short.pooled.all())
    padded = pad_tokens(short, long.hidden.shape[1])
    z = model.encode(_image())
    assert float(relative_error(model.forward(z, 500.0, padded), model.forward(z, 500.0, short)).max()) < 1e-12
    cond = model.condition("a red circle", guidance=3.0, negative="a blue star on a white background")
    out = model.predict(z, 500.0, cond)
    c = model.forward(z, 500.0, cond.cond)
    assert torch.allclose(token_norms(out), token_norms(c)) and not torch.allclose(out, c)
    inv = invert(model, _image(), "a red circle", method="ddim", steps=2)
    with pytest.raises(InversaError, match="cannot replay a ddim inversion: it takes packed latents.*flux.pack"):
        stock_callback(model.pipe, inv)


def test_chroma_masks_all_but_the_first_padding_token(flow_model):
    from inversa.core.types import Embeds

    model = flow_model("chroma")
    e = model.encode_prompt(["a red circle", "a"])
    real = model.pipe.tokenizer(["a red circle", "a"], padding="max_length", max_length=TOKENS).attention_mask
    assert e.pooled.sum(1).tolist() == [sum(r) + 1 for r in real] and e.hidden.shape[1] == TOKENS
    z = model.encode(_image()).expand(2, -1, -1, -1)
    unmasked = model.forward(z, 500.0, Embeds(e.hidden, torch.ones_like(e.pooled)))
    assert float(relative_error(model.forward(z, 500.0, e), unmasked).min()) > 1e-3


def test_kontext_inverts_conditioned_on_its_reference(flow_model):
    model = flow_model("kontext")
    source, other = _image(0), _image(1)
    inv = invert(model, source, "a red circle", method="fixed_point", steps=STEPS, iters=4)
    assert torch.equal(model.reference, inv.z0)  # the inverted image is its own reference
    ours = reconstruct(model, inv, decode=False)
    model.set_reference(other)  # pinned: encoding another image keeps it
    model.encode(source)
    moved = reconstruct(model, inv, decode=False)
    model.set_reference(None)
    assert float(relative_error(moved, ours).max()) > 1e-3  # the reference conditions every step
    model.reference = None
    with pytest.raises(InversaError, match="Kontext needs its reference image"):
        reconstruct(model, inv, decode=False)


@pytest.mark.parametrize("family", FAMILY_CALLS)
def test_edit_shares_the_source_keys_and_values_or_refuses(family, flow_model):
    from inversa.editing.edit import edit

    model = flow_model(family)
    kw = dict(steps=2, guidance=1.0, size=SIZE)
    if family in SINGLE_STREAM:
        with pytest.raises(InversaError, match="injection does not apply to .*single-stream"):
            edit(model, _image().float(), "a red circle", "a blue star", self_replace=1.0, **kw)
        out = edit(model, _image().float(), "a red circle", "a blue star", cross_replace=0.0, self_replace=0.0, **kw)
        assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all()
        return
    plain = edit(model, _image().float(), "a red circle", "a blue star", self_replace=0.0, **kw)
    shared = edit(model, _image().float(), "a red circle", "a blue star", self_replace=1.0, **kw)
    assert plain.shape == shared.shape == (1, 3, SIZE, SIZE) and torch.isfinite(shared).all()
    assert float((plain - shared).abs().max()) > 1e-6  # the sharing changed the target branch (else bit-equal)


@pytest.mark.parametrize("family", ["chroma", "qwenimage"])
def test_cli_inverts_and_reconstructs(family, pipeline_dir, cli_round_trip):
    cli_round_trip(pipeline_dir(family), SIZE)
