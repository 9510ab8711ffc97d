"""DDCM editing (InfEdit, Xu et al. 2024): inversion-free editing, written from the paper's equations.

No noise is searched for. The source branch walks a *virtual* inversion: at every level its
state ``z_src`` lies on the line ``alpha z0 + sigma e`` through the source latent, and the
noise that puts it there, ``eps_cons = (z_src - alpha z0) / sigma``, stands in for the
network's. The target branch predicts its clean latent with the network's correction
``eps_tgt - eps_src`` added to that noise; both branches are renoised with the same noise, so
the source branch predicts ``z0`` at every step (exact by construction) and the target differs
from it only where the two prompts' predictions differ. Made for consistency models (LCM,
few steps); on any other model the same algebra runs on its DDIM levels.

| code | paper |
|---|---|
| ``z0``, ``z_src``, ``z_tgt`` | ``z_0^src``, ``z_tau^src``, ``z_tau^tgt`` |
| ``eps_cons`` | ``epsilon^cons`` |
| ``x0`` | ``z_0^tgt`` (the target's consistency output) |
| ``pred_src``, ``pred_tgt`` | the network's clean-latent predictions of the two branches |
| ``fresh_noise`` | the multistep consistency sampler's new noise per step (off: DDIM-like, deterministic) |
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.samplers import split
from inversa.editing.recipes.flowedit import branches


@torch.no_grad()
def ddcm(model, z0: Tensor, source: list[str], target: list[str], *, steps: int = 4, guidance: float = 7.5,
         source_guidance: float = 1.0, negative: list[str] | None = None, spacing: str | None = None,
         strength: float = 1.0, fresh_noise: bool = False, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Source and target latents of an inversion-free edit of ``z0`` (one prompt of each per sample).

    The empty prompt is the unconditional one of both branches (``negative`` replaces it for
    the target); the branches run in one batch, guidance per branch.
    """
    n = z0.shape[0]
    condition, w = branches(model, source, target, guidance, source_guidance, negative)
    schedule = model.schedule(steps, spacing, strength, shape=tuple(z0.shape))
    gen = torch.Generator().manual_seed(seed)

    def draw() -> Tensor:
        return torch.randn(z0.shape, generator=gen, dtype=torch.float32).to(z0)

    alpha, sigma = schedule.levels(0)[:2]
    z_src = alpha * z0 + sigma * draw()
    z_tgt = z_src.clone()
    for i in range(len(schedule)):
        alpha, sigma, alpha_p, sigma_p = schedule.levels(i)
        out = model.predict(torch.cat([z_src, z_tgt]), float(schedule.timesteps[i]), condition, w)
        pred_src, eps_src = split(model.prediction, z_src, out[:n], alpha, sigma)
        pred_tgt, eps_tgt = split(model.prediction, z_tgt, out[n:], alpha, sigma)
        eps_cons = (z_src - alpha * z0) / sigma
        eps = eps_tgt - eps_src + eps_cons
        # x0 = (z_tgt - sigma eps) / alpha, written without the division (alpha = 0 at a zero-SNR start)
        x0 = z0 + pred_tgt - pred_src
        source = (z_src - sigma * eps_cons) / alpha if alpha > 0 else z0  # z0 up to rounding
        noise = draw() if fresh_noise else eps  # the source's x0 is z0 whatever noise is added
        z_src, z_tgt = alpha_p * z0 + sigma_p * noise, alpha_p * x0 + sigma_p * noise
    return source, x0
