"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024): noise maps in closed form.

Every level gets its own independent noisy version ``x_k = alpha_k z0 + sigma_k n_k``;
the noise map of step ``k`` is what the DDPM step from ``x_k`` must add to land on
``x_{k+1}``: ``z_k = (x_{k+1} - mean(x_k)) / std_k``. DDPM sampling with these maps
reproduces ``z0`` exactly; editing reuses them with another prompt. The last step has
no fresh noise (std 0); its map is the plain residual (scale 1).
"""
from __future__ import annotations

import time

import torch

from .. import samplers
from . import Trace, register
from ._common import check_steps, step_info


def _noise(levels, eta: float) -> tuple[float, float]:
    """(std of the fresh noise, scale of the stored map) of one step."""
    std = samplers.ddpm_noise(*levels, eta=eta)
    return std, (std if std > 0 else 1.0)


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """DDPM sampling that adds the recorded noise maps."""
    maps = inv.state["noise_maps"]
    check_steps("ddpm_edit_friendly", maps, schedule)
    eta = float(inv.config.get("eta", 1.0))
    x = inv.x_T
    for k in range(len(schedule)):
        levels = schedule.levels(k)
        std, scale = _noise(levels, eta)
        A, B = samplers.coefficients(model.prediction, *levels, noise=std)
        x = A * x + B * model.predict(x, float(schedule.timesteps[k]), condition) + scale * maps[k].to(x)
    return x


@register("ddpm_edit_friendly", sample=sample, cost="1 NFE per step, closed form (noise maps)")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, eta: float = 1.0, seed: int = 0, keep_trajectory: bool = True):
    """Independent noisy latents per level and the DDPM noise maps that chain them (exact)."""
    g = torch.Generator().manual_seed(int(seed))
    per = 2 if condition.guided else 1
    a, s = schedule.alphas.tolist(), schedule.sigmas.tolist()
    xs = [a[k] * z0 + s[k] * torch.randn(z0.shape, generator=g, dtype=z0.dtype).to(z0.device)
          for k in range(len(schedule))] + [z0]
    maps, steps = [], []
    for k in range(len(schedule)):
        start = time.perf_counter()
        levels = schedule.levels(k)
        std, scale = _noise(levels, eta)
        A, B = samplers.coefficients(model.prediction, *levels, noise=std)
        mean = A * xs[k] + B * model.predict(xs[k], float(schedule.timesteps[k]), condition)
        maps.append((xs[k + 1] - mean) / scale)
        steps.append(step_info(k, per, time.perf_counter() - start, noise_std=std))
    return Trace(xs[0], xs if keep_trajectory else None, {"noise_maps": torch.stack(maps)}, steps)
