"""Half precision: a bfloat16 network inside float32 solver state, targets at the network's noise, clear NaN errors."""
import pytest
import torch

from inversa.core.errors import InversaError
from inversa.core.metrics import latent_mse
from inversa.inversion.api import invert, reconstruct
from inversa.methods.preciseinv import targets
from inversa.tiny.random_pipelines import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(size=32):
    torch.manual_seed(0)
    return torch.rand(1, 3, size, size) * 2 - 1


def _run(model, image, **config):
    model.nfe = 0
    inv = invert(model, image, steps=2, size=0, **config)
    nfe = model.nfe
    return inv, nfe, float(latent_mse(model.encode(image), reconstruct(model, inv, decode=False)).mean())


def test_bfloat16_preciseinv_is_close_to_float32_at_similar_cost(tiny_model):
    image = _image()
    inv32, nfe32, mse32 = _run(tiny_model("sd"), image)
    inv16, nfe16, mse16 = _run(tiny_model("sd", "bfloat16"), image)
    assert inv16.x_T.dtype == torch.float32  # solver state stays float32 around the bfloat16 network
    assert mse16 <= 10 * mse32 and nfe16 <= 1.5 * nfe32, (mse16, mse32, nfe16, nfe32)
    naive = _run(tiny_model("sd", "bfloat16"), image, method="ddim")[2]
    assert mse16 < naive / 5  # and the solver did work (a random UNet at 2 steps: Anderson alone, 6.5x)


class _Half:
    dtype = torch.bfloat16


def test_targets_floor_at_float32_state_and_the_networks_rounding():
    x = torch.full((2, 4), 3.0)
    floor = targets(_Half(), x, 0.0, 1e-12)  # the state is float32: its floor, not bfloat16's
    assert float(floor[0]) == pytest.approx((25 * torch.finfo(torch.float32).eps) ** 2 * 9)
    noise = torch.tensor([[0.5] * 4, [1e-6] * 4])
    goal = targets(_Half(), x, 0.0, 1e-12, noise)  # below eps |B out| the residual is the network's rounding
    assert float(goal[0]) == pytest.approx(16 * 2.0 ** -14 * 0.25) and float(goal[1]) == pytest.approx(float(floor[1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_inverts_in_bfloat16_with_float32_outputs(tiny_model, family):
    model = tiny_model(family, "bfloat16")
    inv = invert(model, _image(64), steps=2, size=0, method="ddim")
    assert model.dtype == torch.bfloat16 and inv.x_T.dtype == torch.float32 and torch.isfinite(inv.x_T).all()


def test_nan_in_bfloat16_names_dtype_step_and_fix(pipeline_dir):
    from inversa import load_model

    model = load_model(pipeline_dir("sd"), dtype="bfloat16")
    with torch.no_grad():
        model.net.conv_out.bias.fill_(float("nan"))
    with pytest.raises(InversaError, match=r"produced NaN/inf at t=\S+ in bfloat16: .*use --dtype float32$"):
        invert(model, _image(), steps=2, size=0)


@pytest.mark.parametrize("dtype, tf32_inside", [("float32", False), ("bfloat16", True)])
def test_float32_network_calls_run_without_tf32_on_cuda(tiny_model, monkeypatch, dtype, tf32_inside):
    model = tiny_model("sd", dtype)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the guard only acts where CUDA exists
    seen = []
    network = model.network
    monkeypatch.setattr(model, "network", lambda *a: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) or network(*a))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # cuDNN's default
    try:
        invert(model, torch.zeros(1, 3, 64, 64), method="ddim", steps=2)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # restored afterwards
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(tf32_inside, tf32_inside)] * 2
