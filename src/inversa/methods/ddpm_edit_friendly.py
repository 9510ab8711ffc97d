"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024): noise maps in closed form.

Every level gets its own independent noisy version ``x_k = alpha_k z0 + sigma_k n_k``;
the noise map of step ``k`` is what the DDPM step from ``x_k`` must add to land on
``x_{k+1}``: ``z_k = (x_{k+1} - mean(x_k)) / std_k``. DDPM sampling with these maps
reproduces ``z0`` exactly; editing reuses them with another prompt. The last step has
no fresh noise (std 0); its map is the plain residual (scale 1). api.denoise_step replays them.
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.methods import SHARED, Recorder, StateKey, register

# DDPM noise maps (N, B, ...) and their noise scale: what api.denoise_step replays
NOISE_MAPS = {"noise_maps": StateKey(per_step="noise maps",
                                     unreplayable="its DDPM steps add recorded noise maps, while a stock pipeline "
                                                  "draws fresh noise"),
              "noise_eta": SHARED}


@register("ddpm_edit_friendly", cost="1 NFE per step, closed form (noise maps)", state=NOISE_MAPS)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, eta: float = 1.0, seed: int = 0, keep_trajectory: bool = True):
    """Independent noisy latents per level and the DDPM noise maps that chain them (exact)."""
    g = torch.Generator().manual_seed(int(seed))
    a, s = schedule.alphas.tolist(), schedule.sigmas.tolist()
    xs = [a[k] * z0 + s[k] * torch.randn(z0.shape, generator=g, dtype=z0.dtype).to(z0.device)
          for k in range(len(schedule))] + [z0]
    maps, rec = [], Recorder(model, z0, inverse=False)
    for k in rec.schedule(schedule, "ddpm_edit_friendly"):
        levels = schedule.levels(k)
        std = samplers.ddpm_noise(*levels, eta=eta)
        mean = samplers.step(model.prediction, xs[k], model.predict(xs[k], float(schedule.timesteps[k]), condition),
                             *levels, noise=std)
        maps.append((xs[k + 1] - mean) / (std or 1.0))
        rec.record(None, noise_std=std)
    state = {"noise_maps": torch.stack(maps), "noise_eta": torch.tensor(float(eta))}
    return rec.trace(xs[0], state, keep_trajectory, trajectory=xs)
