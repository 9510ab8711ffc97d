"""FlowEdit (Kulikov et al. 2024): inversion-free editing with a flow model.

No noise is searched for. An ODE runs directly from the source latent ``X`` to the edit:
at each level ``s`` a fresh noise ``N`` places the source at ``Z_src = (1 - s) X + s N``, the
edit at ``Z_tar = Z_edit + Z_src - X`` (the same noise), and the edit moves by the difference
of the target and source velocities there, averaged over ``n_avg`` draws. Where the two
prompts agree the difference vanishes, so unedited regions stay as they are.

| code | paper |
|---|---|
| ``z0``, ``z`` | ``X^src_0``, ``Z^FE_t`` |
| ``noisy``, ``noisy + z - z0`` | ``Z^src_t``, ``Z^tar_t`` |
| ``strength`` | ``n_max / T`` (the fraction of the steps that edit, from the clean end) |
| ``n_avg``, ``guidance``, ``source_guidance`` | ``n_avg``, target and source CFG scales |
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core import flow
from inversa.core.errors import InversaError
from inversa.core.types import Condition


def branches(model, source: list[str], target: list[str], guidance: float, source_guidance: float,
             negative: list[str] | None) -> tuple[Condition, Tensor | None]:
    """The condition of a ``[source, target]`` batch and its per-row guidance (None when no row is guided).

    Both branches use the empty prompt as unconditional one; ``negative`` replaces it for the target.
    """
    n = len(source)
    w = torch.tensor([source_guidance] * n + [guidance] * n, dtype=torch.float64)
    guided = bool((w != 1.0).any())
    condition = Condition(model.encode_prompt(source + target),
                          model.encode_prompt([""] * n + (negative or [""] * n)) if guided else None)
    return condition, w if guided else None


@torch.no_grad()
def flowedit(model, z0: Tensor, source: list[str], target: list[str], *, steps: int = 10, guidance: float = 7.5,
             source_guidance: float = 1.0, negative: list[str] | None = None, spacing: str | None = None,
             strength: float = 0.66, n_avg: int = 1, seed: int = 0) -> Tensor:
    """The edited latent of ``z0`` from the ``source`` prompts to the ``target`` ones (one per sample).

    Both branches use the empty prompt as unconditional one (``negative`` replaces it for the
    target), as in the paper; they run in one batch, guidance per branch.
    """
    if n_avg < 1:
        raise InversaError(f"flowedit n_avg must be at least 1, got {n_avg}")
    n = z0.shape[0]
    condition, w = branches(model, source, target, guidance, source_guidance, negative)
    v = flow.velocity(model, condition, "flowedit", w)
    schedule = model.schedule(steps, spacing, strength)
    gen = torch.Generator().manual_seed(seed)

    def step(i, z, s, s_next, carry):
        delta = torch.zeros_like(z)
        for _ in range(n_avg):
            noisy = (1 - s) * z0 + s * torch.randn(z0.shape, generator=gen, dtype=z0.dtype).to(z0.device)
            out = v(torch.cat([noisy, noisy + z - z0]), s)
            delta += (out[n:] - out[:n]) / n_avg
        return z + (s_next - s) * delta, None

    return flow.integrate(model, z0, schedule, step, inverse=False, desc="flowedit")[0]
