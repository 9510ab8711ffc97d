"""Tiny random pipelines of every family, saved and loaded back through from_pretrained."""
import pytest
import torch

from inversa import DiffusersModel, Inversion, InversaError, invert, load_model, reconstruct
from inversa.core.metrics import relative_error
from inversa.tiny.random_pipelines import FAMILIES, build_pipeline

EXPECTED = {"sd": ("sd", "epsilon"), "sd2v": ("sd", "v_prediction"), "sdxl": ("sdxl", "epsilon"),
            "lcm": ("lcm", "epsilon"), "sd3": ("sd3", "flow"), "flux": ("flux", "flow")}


def _images(n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=64, mode="bilinear")
    return base * 2 - 1


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_pipeline_loads_with_identical_outputs(family, pipeline_dir):
    model = load_model(pipeline_dir(family))
    assert (model.family, model.prediction) == EXPECTED[family]
    fresh = DiffusersModel(build_pipeline(family))
    cond, sched = model.condition("a red circle"), model.schedule(4)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    t = float(sched.timesteps[1])
    assert torch.allclose(model.predict(x, t, cond), fresh.predict(x, t, fresh.condition("a red circle")), atol=1e-5)
    assert torch.allclose(model.encode(_images()), fresh.encode(_images()), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_invert_and_reconstruct_every_family(family, tiny_model):
    model = tiny_model(family)
    images = _images(2)
    naive = invert(model, images, ["a red circle", "a blue star"], method="ddim", steps=4)
    fp = invert(model, images, ["a red circle", "a blue star"], method="fixed_point", steps=4, iters=6)
    assert naive.x_T.shape == (2, 4, 32, 32) and naive.family == EXPECTED[family][0]
    err_naive = relative_error(reconstruct(model, naive, decode=False), naive.z0)
    err_fp = relative_error(reconstruct(model, fp, decode=False), fp.z0)
    assert torch.all(err_fp < err_naive)
    assert reconstruct(model, fp).shape == (2, 3, 64, 64)


def test_guided_inversion_uses_both_branches(tiny_model):
    model = tiny_model("sd")
    inv = invert(model, _images(), "a red circle", method="ddim", steps=3, guidance=7.5)
    assert inv.negative == [""] and inv.stats["nfe"] == 6
    plain = invert(model, _images(), "a red circle", method="ddim", steps=3)
    assert plain.stats["nfe"] == 3 and not torch.allclose(inv.x_T, plain.x_T)


def test_schedule_spacing_and_terminal_level(tiny_model):
    model = tiny_model("sd")
    leading, trailing = model.schedule(2, "leading"), model.schedule(2, "trailing")
    assert leading.timesteps.tolist() == [501, 1] and trailing.timesteps.tolist() == [999, 499]
    assert leading.terminal()["alpha_T"] == pytest.approx(float(model.scheduler.alphas_cumprod[501]) ** 0.5)
    a0 = float(model.scheduler.alphas_cumprod[0])  # set_alpha_to_one=False: stock DDIM's last step lands here
    assert float(leading.alphas[-1]) ** 2 == pytest.approx(a0, rel=1e-12) and float(leading.sigmas[-1]) ** 2 == pytest.approx(1 - a0)
    assert model.schedule(10, strength=0.5).timesteps.tolist() == model.schedule(10).timesteps[5:].tolist()
    with pytest.raises(InversaError, match="unknown timestep spacing"):
        model.schedule(4, "evenly")


def test_sd3_schedule_ends_at_pure_noise(tiny_model):
    sched = tiny_model("sd3").schedule(4)
    assert float(sched.sigmas[0]) == 1.0 and float(sched.alphas[0]) == 0.0 and float(sched.sigmas[-1]) == 0.0


def test_inversion_round_trips_through_safetensors(tiny_model, tmp_path):
    model = tiny_model("sdxl")
    inv = invert(model, _images(), "a red circle", method="fixed_point", steps=3, iters=3, keep_trajectory=True)
    path = inv.save(str(tmp_path))
    assert path.endswith("inversion.safetensors") and open(path, "rb").read(8)  # one file, no pickle
    back = Inversion.load(path)
    assert torch.equal(back.x_T, inv.x_T) and torch.equal(back.trajectory, inv.trajectory)
    assert back.timesteps == inv.timesteps and back.prompts == ["a red circle"] and back.config == {"iters": 3}
    assert back.steps == inv.steps and back.family == "sdxl"
    assert torch.equal(reconstruct(model, back, decode=False), reconstruct(model, inv, decode=False))


def test_sampling_steps_may_differ_from_inversion_steps(tiny_model):
    model = tiny_model("sd")
    inv = invert(model, _images(), steps=8, method="fixed_point", iters=4)
    z8 = reconstruct(model, inv, decode=False)
    z4 = reconstruct(model, inv, steps=4, decode=False)
    assert z4.shape == z8.shape and not torch.equal(z4, z8)
    assert float(relative_error(z8, inv.z0)) < float(relative_error(z4, inv.z0))


def test_bad_inputs_raise_clear_errors(tiny_model, tmp_path):
    model = tiny_model("sd")
    with pytest.raises(InversaError, match="multiples of 4"):
        model.encode(torch.zeros(1, 3, 62, 64))
    with pytest.raises(InversaError, match="unknown method 'nope'"):
        invert(model, _images(), method="nope")
    with pytest.raises(InversaError, match="has no option itres"):
        invert(model, _images(), method="fixed_point", itres=3)
    with pytest.raises(InversaError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "notapipe").mkdir()
    with pytest.raises(InversaError, match="cannot load model"):
        load_model(str(tmp_path / "notapipe"))


def test_unsupported_pipeline_is_named():
    class Fake:
        unet = None
        transformer = None
        components = {}

    with pytest.raises(InversaError, match="unsupported pipeline Fake; supported: StableDiffusion"):
        DiffusersModel(Fake())


def test_non_finite_outputs_are_reported_not_propagated(pipeline_dir):
    model = load_model(pipeline_dir("sd"))
    with torch.no_grad():
        model.net.conv_out.weight.fill_(float("inf"))
    with pytest.raises(InversaError, match="produced NaN/inf at t=.*weights are broken"):
        invert(model, _images(), steps=2)
    half = load_model(pipeline_dir("sd"), dtype="float16")
    with torch.no_grad():
        half.net.conv_out.weight.fill_(float("inf"))
    with pytest.raises(InversaError, match=r"at t=\S+ in float16: float16 overflowed: use --dtype bfloat16"):
        invert(half, _images(), steps=2)
