"""POLARIS: the closed-form scale, its replay by timestep, and better CFG reconstructions than a fixed scale."""
import pytest
import torch

from inversa.core.errors import InversaError
from inversa.core.metrics import latent_mse, relative_error
from inversa.core.replay import denoise
from inversa.inversion.api import invert, reconstruct, schedule_of, condition_of
from inversa.io.result import Inversion
from inversa.methods.polaris import polaris_scale
from inversa.models.oracle import GaussianModel


pytestmark = pytest.mark.usefixtures("one_thread")


def test_scale_is_the_least_squares_minimiser():
    g = torch.Generator().manual_seed(0)
    u, c, pu, pc = (torch.randn(3, 4, 5, generator=g, dtype=torch.float64) for _ in range(4))
    c[2] = pc[2] + 0.95 * (u[2] - pu[2])  # optimum w = 20, above the clamp
    w = polaris_scale(u, c, pu, pc)
    du, dc = u - pu, c - pc
    grid = torch.linspace(0, 15, 30001, dtype=torch.float64)
    for k in range(2):
        err = ((du[k] + grid[:, None, None] * (dc[k] - du[k])) ** 2).flatten(1).sum(1)
        assert abs(float(w[k]) - float(grid[err.argmin()])) < 1e-3
    assert float(w[2]) == 15.0
    assert polaris_scale(u, c, None, None).tolist() == [1.0, 1.0, 1.0]
    assert polaris_scale(u, u, pu, pu).tolist() == [1.0, 1.0, 1.0]  # vanishing denominator


def test_oracle_fixed_point_base_is_exact_with_replayed_scales():
    model = GaussianModel(prediction="epsilon")
    z0 = model.sample_data(2, prompt="a cat", seed=2)
    inv = invert(model, z0, "a cat", method="polaris", steps=6, guidance=7.5, base="fixed_point", iters=60,
                 tol=1e-24)
    ts, ws = inv.state["guidance_t"], inv.state["guidance_w"]
    assert ts.dtype == torch.float64 and ts.tolist() == inv.timesteps and ws.shape == (6, 2)
    assert ws[-1].tolist() == [1.0, 1.0]  # the first inversion step (cleanest) uses w = 1
    one = model.condition(["a cat"], 7.5)
    for b in range(2):
        exact = model.exact_inversion(z0[b:b + 1], schedule_of(model, inv), one, guidance=ws[:, b].tolist())
        assert relative_error(inv.x_T[b:b + 1], exact[0]).max() < 1e-6
    assert relative_error(reconstruct(model, inv, decode=False), z0).max() < 1e-6
    fixed = denoise(model, inv.x_T, schedule_of(model, inv), condition_of(model, inv))  # without the replay
    assert relative_error(fixed, z0).max() > 1e-2


def test_beats_fixed_guidance_on_tiny_sd(tiny_model, photo, tmp_path):
    model = tiny_model("sd")
    errs = {}
    for method in ("ddim", "polaris"):
        inv = invert(model, photo, "a photo of an astronaut", method=method, steps=4, guidance=7.5)
        errs[method] = float(latent_mse(reconstruct(model, inv, decode=False), inv.z0))
    assert errs["polaris"] < errs["ddim"], errs
    again = Inversion.load(inv.save(str(tmp_path / "p.safetensors")))
    assert torch.equal(again.state["guidance_w"], inv.state["guidance_w"])
    assert torch.allclose(reconstruct(model, again, decode=False), reconstruct(model, inv, decode=False))


def test_needs_guidance():
    model = GaussianModel()
    with pytest.raises(InversaError, match="polaris needs classifier-free guidance"):
        invert(model, model.sample_data(1), method="polaris", steps=2)
    with pytest.raises(InversaError, match="polaris option base must be one of ddim, fixed_point"):
        invert(model, model.sample_data(1), method="polaris", steps=2, guidance=3.0, base="edict")
