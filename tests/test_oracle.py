"""Methods against the exact inversion of the Gaussian model (affine denoiser, linear solve)."""
import pytest
import torch

from inversa import denoise, invert, reconstruct
from inversa.core.metrics import relative_error
from inversa.models.oracle import GaussianModel


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "flow"])
def test_exact_inversion_regenerates_the_data(prediction):
    model = GaussianModel(prediction=prediction)
    z0 = model.sample_data(2, "a cat")
    cond = model.condition("a cat", guidance=3.0)
    sched = model.schedule(6)
    x_T = model.exact_inversion(z0, sched, cond)[0]
    assert float(relative_error(denoise(model, x_T, sched, cond), z0).max()) < 1e-10


@pytest.mark.parametrize("prediction,steps", [("epsilon", 2), ("epsilon", 10), ("v_prediction", 4),
                                              ("v_prediction", 50), ("flow", 10), ("flow", 50)])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_fixed_point_reaches_the_exact_noise_and_ddim_does_not(prediction, steps, guidance):
    model = GaussianModel(prediction=prediction)
    z0 = model.sample_data(3, "a cat", seed=2)
    exact = model.exact_inversion(z0, model.schedule(steps), model.condition("a cat", guidance))[0]
    fp = invert(model, z0, "a cat", method="fixed_point", steps=steps, guidance=guidance, iters=60, tol=1e-26)
    naive = invert(model, z0, "a cat", method="ddim", steps=steps, guidance=guidance)
    assert float(relative_error(fp.x_T, exact).max()) < 1e-5
    assert float(relative_error(naive.x_T, exact).min()) > 1e-2
    assert float(relative_error(reconstruct(model, fp), z0).max()) < 1e-5


@pytest.mark.parametrize("variant,gain", [("average", 3), ("plain", 10), ("anderson", 1000)])
def test_fixed_point_variants_improve_on_ddim(variant, gain):
    model = GaussianModel()
    z0 = model.sample_data(2)
    exact = model.exact_inversion(z0, model.schedule(10), model.condition(""))[0]
    naive = float(relative_error(invert(model, z0, steps=10, method="ddim").x_T, exact).max())
    fp = invert(model, z0, steps=10, method="fixed_point", variant=variant, iters=8, tol=0.0)
    assert float(relative_error(fp.x_T, exact).max()) < naive / gain
    assert all(max(s["iters"]) == 8 for s in fp.steps)


def test_fixed_point_stops_per_sample_on_tolerance():
    model = GaussianModel()
    z0 = torch.cat([model.sample_data(1, seed=0), model.mean[None] + 1e-3 * model.sample_data(1, seed=1)])
    inv = invert(model, z0, steps=10, method="fixed_point", iters=40, tol=1e-20)
    iters = torch.tensor([s["iters"] for s in inv.steps])
    assert (iters < 40).all()  # converged before the cap
    assert max(r for s in inv.steps for r in s["residual"]) < 1e-20
    assert inv.stats["nfe"] == pytest.approx(iters.sum().item() / 2)


def test_partial_inversion_stops_early():
    model = GaussianModel()
    z0 = model.sample_data(1)
    inv = invert(model, z0, steps=10, strength=0.3, method="fixed_point", iters=40, tol=1e-26)
    assert inv.num_steps == 3 and inv.timesteps[0] == model.schedule(10).timesteps[7]
    assert float(relative_error(reconstruct(model, inv), z0)) < 1e-8


def test_per_step_state_refuses_another_step_count():
    from inversa import InversaError

    model = GaussianModel()
    z0 = model.sample_data(1, "a cat")
    inv = invert(model, z0, "a cat", method="null_text", steps=4, guidance=3.0)
    with pytest.raises(InversaError, match="per-step null embeddings for 4 steps"):
        reconstruct(model, inv, steps=6)
