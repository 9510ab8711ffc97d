"""PixArt-Sigma, HunyuanDiT and HiDream-I1: load, invert, reconstruct, and the user's stock pipeline replays (float64).

Each family's own stock pipeline, called with ``latents=x_T`` and :func:`inversa.stock_scheduler`,
must regenerate inversa's reconstruction to 1e-5 relative in float64.
"""
import pytest
import torch

from inversa.core.errors import InversaError
from inversa.inversion.api import invert, reconstruct
from inversa.inversion.stock import stock_callback, stock_scheduler
from inversa.core.metrics import relative_error

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3
SIZE = 32
TOKENS = 32  # T5 / Llama length of the families that pad prompts to a knob (PixArt 300, HiDream 128 by default)
PIPELINES = {"pixart": "PixArtSigmaPipeline", "hunyuandit": "HunyuanDiTPipeline", "hidream": "HiDreamImagePipeline"}
# guidance where the method inverts under CFG; preciseinv reconstructs unguided (the paper's protocol)
METHODS = {"ddim": (3.0, {}), "fixed_point": (3.0, {"iters": 2}), "preciseinv": (1.0, {"max_iters": 2}),
           "polaris": (3.0, {}), "direct": (3.0, {})}
FLOW_METHODS = {"uni_inv": (3.0, {}), "rf_inversion": (1.0, {})}  # flow only: their x_T is sampled by plain Euler
CALLBACK = ("polaris", "direct")  # per-step state replayed by stock_callback
REFUSES_CALLBACK = ("pixart",)  # the legacy callback(step, t, latents) only
CASES = [(f, m) for f in PIPELINES for m in METHODS] + [("hidream", m) for m in FLOW_METHODS]


def _image():
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64), size=SIZE,
                                           mode="bilinear") * 2 - 1


@pytest.fixture
def model3(tiny_model):
    def get(family, dtype="float64"):
        model = tiny_model(family, dtype)
        if family in ("pixart", "hidream"):
            model.max_sequence_length = TOKENS
        return model

    return get


def stock_call(model, inv, **kw):
    pipe = type(model.pipe).from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    extra = {"use_resolution_binning": False}
    if model.family == "hidream":  # its call renders at the area (default_sample_size * vae_scale)^2: 32 x 32 here
        pipe.default_sample_size, extra = SIZE // model.vae_scale, {}
    if model.family in ("pixart", "hidream"):
        extra["max_sequence_length"] = model.max_sequence_length
    args = dict(latents=inv.x_T, num_inference_steps=len(inv.timesteps), guidance_scale=inv.guidance,
                height=SIZE, width=SIZE, output_type="latent") | extra | kw
    return pipe(inv.prompts, **args).images


@pytest.mark.parametrize("family", PIPELINES)
def test_load_model_recognises_the_pipeline(family, model3):
    model = model3(family, "float32")
    assert type(model.pipe).__name__ == PIPELINES[family] and model.family == family
    z = model.encode(_image().float())
    assert z.shape == (1, 4, SIZE // model.vae_scale, SIZE // model.vae_scale)
    assert model.decode(z).shape == (1, 3, SIZE, SIZE)


@pytest.mark.parametrize("family,method", CASES)
def test_stock_pipeline_regenerates_the_inversion(family, method, model3):
    model = model3(family)
    guidance, kw = (METHODS | FLOW_METHODS)[method]
    inv = invert(model, _image(), "a red circle", method=method, steps=STEPS, guidance=guidance, **kw)
    ours = reconstruct(model, inv, decode=False)
    if method in CALLBACK and family in REFUSES_CALLBACK:
        with pytest.raises(InversaError, match=f"cannot replay a {method} inversion: .*legacy callback"):
            stock_callback(model.pipe, inv)
        return
    replay = stock_callback(model.pipe, inv).kwargs if method in CALLBACK else {}
    assert float(relative_error(stock_call(model, inv, **replay), ours).max()) < 1e-5
    if method in CALLBACK:  # the per-step state matters: without it the pipeline lands elsewhere
        assert float(relative_error(stock_call(model, inv), ours).max()) > 1e-3


@pytest.mark.parametrize("family", ["hunyuandit", "hidream"])
def test_null_text_replay_is_refused_with_the_reason(family, model3):
    model = model3(family)
    tuned = invert(model, _image(), "a red circle", method="null_text", steps=2, guidance=3.0, iters=1)
    with pytest.raises(InversaError, match="cannot replay a null_text inversion: its prompt is"):
        stock_callback(model.pipe, tuned)


def test_stock_schedulers_keep_each_configs_quirks(model3):
    pixart, hunyuan, hidream = model3("pixart"), model3("hunyuandit"), model3("hidream")
    ours, default = stock_scheduler(pixart.pipe), pixart.pipe.scheduler
    assert type(ours).__name__ == "DPMSolverMultistepScheduler" and ours.config.solver_order == 1
    default.set_timesteps(4)
    assert pixart.schedule(4).timesteps.tolist() == default.timesteps.tolist()  # linspace without t = 0
    assert float(pixart.schedule(4).alphas[-1]) == 1.0  # final_sigmas_type "zero"
    ddim = stock_scheduler(hunyuan.pipe)
    assert type(ddim).__name__ == "DDIMScheduler" and ddim.config.prediction_type == "v_prediction"
    assert hunyuan.prediction == "v_prediction" and ddim.config.set_alpha_to_one  # DDPM ends at alpha = 1
    hunyuan.pipe.scheduler.set_timesteps(4)
    assert hunyuan.schedule(4).timesteps.tolist() == hunyuan.pipe.scheduler.timesteps.tolist()
    from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift

    assert hidream.shift_mu((1, 4, 2, 2)) == calculate_shift(hidream.net.max_seq)  # fixed, whatever the image


def test_prompts_go_through_the_pipelines_encoders(model3):
    hunyuan, hidream = model3("hunyuandit"), model3("hidream")
    e = hunyuan.encode_prompt(["a red circle"])
    bert, _, mask, _ = hunyuan.pipe.encode_prompt("a red circle", do_classifier_free_guidance=False,
                                                  max_sequence_length=77, text_encoder_index=0)
    parts = hunyuan.split(e)
    assert torch.equal(parts["encoder_hidden_states"], bert) and torch.equal(parts["text_embedding_mask"], mask)
    assert parts["encoder_hidden_states_t5"].shape[1] == 256
    t5, _, llama, _, pooled, _ = hidream.pipe.encode_prompt("a red circle", do_classifier_free_guidance=False,
                                                            max_sequence_length=TOKENS)
    ours_t5, ours_llama = hidream.split(hidream.encode_prompt(["a red circle"]))
    assert torch.equal(ours_t5, t5) and torch.equal(ours_llama, llama)


@pytest.mark.parametrize("family", PIPELINES)
def test_edit_injects_cross_attention_or_refuses(family, model3):
    from inversa.editing.edit import edit

    model = model3(family, "float32")
    kw = dict(steps=2, guidance=1.0, size=SIZE)
    if family != "pixart":
        with pytest.raises(InversaError, match="injection does not apply to .*"):
            edit(model, _image().float(), "a red circle", "a blue star", cross_replace=0.5, **kw)
        out = edit(model, _image().float(), "a red circle", "a blue star", cross_replace=0.0, self_replace=0.0, **kw)
        assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all()
        return
    plain = edit(model, _image().float(), "a red circle", "a blue star", cross_replace=0.0, **kw)
    injected = edit(model, _image().float(), "a red circle", "a blue star", cross_replace=1.0, **kw)
    assert injected.shape == (1, 3, SIZE, SIZE) and torch.isfinite(injected).all()
    assert float((plain - injected).abs().max()) > 1e-6  # the source's cross-attention maps changed the target


@pytest.mark.parametrize("family", PIPELINES)
def test_cli_inverts_and_reconstructs(family, pipeline_dir, cli_round_trip):
    cli_round_trip(pipeline_dir(family), SIZE)


@pytest.mark.parametrize("family", ["lumina2", "qwenimage"])
def test_rescaling_families_rescale_at_zero_guidance_too(family, tiny_model):
    """Their normalisation hooks into Model.predict; at w = 0 they still rescale u to c's norm (no shortcut)."""
    model = tiny_model(family, "float64")
    z = model.encode(_image())
    cond = model.condition("a red circle", guidance=0.0, negative="a blue star")
    u, c = model.predict_parts(z, 500.0, cond)
    assert torch.equal(model.predict(z, 500.0, cond), model.rescale_guided(u, c)) and not torch.allclose(u, c)


@pytest.mark.slow  # every registered method on three families: ~25 s
@pytest.mark.parametrize("family", PIPELINES)
def test_every_method_runs_or_is_refused_in_one_line(family, model3):
    from inversa.methods import available, get_method

    model = model3(family, "float32")
    for method in available():
        flow_only = get_method(method).flow_only
        kw = {"guidance": 1.0, "lam": 0.5} if method == "cfgpp" else {"guidance": 2.0}
        if flow_only and model.prediction != "flow":
            with pytest.raises(InversaError, match=f"{method} needs a flow-matching model"):
                invert(model, _image().float(), "a red circle", method=method, steps=2, **kw)
            continue
        inv = invert(model, _image().float(), "a red circle", method=method, steps=2, **kw)
        assert torch.isfinite(reconstruct(model, inv, decode=False)).all(), method
