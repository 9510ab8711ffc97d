"""Every step map against its algebraic inverse, and the common form against the textbook formulas."""
import math

import pytest
import torch

from inversa.core import samplers
from inversa.core.errors import InversaError


def _levels(prediction):
    if prediction == "flow":
        return 0.4, 0.6, 0.7, 0.3
    a, ap = 0.3, 0.8  # alphas_cumprod at t and t_prev
    return math.sqrt(a), math.sqrt(1 - a), math.sqrt(ap), math.sqrt(1 - ap)


@pytest.mark.parametrize("prediction", samplers.PREDICTIONS)
@pytest.mark.parametrize("ddpm", [False, True])
def test_step_and_inverse_round_trip(prediction, ddpm):
    g = torch.Generator().manual_seed(0)
    x, out, z = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    levels = _levels(prediction)
    noise = samplers.ddpm_noise(*levels) if ddpm and prediction != "flow" else 0.0
    x_prev = samplers.step(prediction, x, out, *levels, noise=noise, z=z)
    back = samplers.invert_step(prediction, x_prev, out, *levels, noise=noise, z=z)
    assert torch.allclose(back, x, atol=1e-12)
    assert (noise > 0) == (ddpm and prediction != "flow")


def test_epsilon_step_is_textbook_ddim():
    a, s, ap, sp = _levels("epsilon")
    x, e = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    textbook = ap * (x - s * e) / a + sp * e
    assert torch.allclose(samplers.step("epsilon", x, e, a, s, ap, sp), textbook, atol=1e-12)


def test_v_prediction_matches_epsilon_step_after_conversion():
    a, s, ap, sp = _levels("v_prediction")
    x0, eps = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = a * x0 + s * eps
    v = a * eps - s * x0
    assert torch.allclose(samplers.step("v_prediction", x, v, a, s, ap, sp), ap * x0 + sp * eps, atol=1e-12)
    assert torch.allclose(samplers.step("epsilon", x, eps, a, s, ap, sp), ap * x0 + sp * eps, atol=1e-12)


def test_flow_step_is_euler():
    a, s, ap, sp = _levels("flow")
    x, v = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    assert torch.allclose(samplers.step("flow", x, v, a, s, ap, sp), x + (sp - s) * v, atol=1e-12)


def test_ddpm_noise_is_posterior_std():
    a, s, ap, sp = _levels("epsilon")
    a_t, a_p = a * a, ap * ap
    beta = 1 - a_t / a_p
    assert samplers.ddpm_noise(a, s, ap, sp) == pytest.approx(math.sqrt((1 - a_p) / (1 - a_t) * beta))
    assert samplers.ddpm_noise(a, s, 1.0, 0.0) == 0.0


def test_renoise_equals_inverse_step_for_epsilon_and_flow():
    for prediction in ("epsilon", "flow"):
        a, s, ap, sp = _levels(prediction)
        x_prev, out = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        naive = samplers.invert_step(prediction, x_prev, out, a, s, ap, sp)
        assert torch.allclose(samplers.renoise(prediction, x_prev, out, ap, sp, a, s), naive, atol=1e-12)


def test_unknown_prediction_is_rejected():
    with pytest.raises(InversaError, match="unknown prediction type"):
        samplers.coefficients("sample", 1, 0, 1, 0)


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    assert torch.allclose(samplers.slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(samplers.slerp(a, b, 1.0), b, atol=1e-5)
    mid = samplers.slerp(a, b, 0.5)
    ratio = mid.flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)
    assert torch.all((ratio > 0.9) & (ratio < 1.1))  # a linear mix would lose ~30% of the norm
