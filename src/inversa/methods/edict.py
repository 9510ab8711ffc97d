"""EDICT (Wallace et al. 2023): two coupled latents make every sampling step exactly invertible.

A step updates ``x`` with the prediction at ``y`` and ``y`` with the prediction at the
new ``x``, then mixes them with weight ``mix``; each of the four affine updates is
undone in reverse order, so inversion is exact whatever the network. The second
latent ``y_T`` is kept in ``state["coupled"]``; EDICT's own sampler reconstructs.
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.methods import Recorder, StateKey, register


# the second latent, batched like x_T and slerped like it
COUPLED = StateKey(batch_dim=0, mix="slerp",
                   unreplayable="its sampler steps a coupled pair of latents, which no stock scheduler does")


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """The coupled EDICT sampler from ``(x_T, y_T)``; returns the ``x`` chain."""
    x, y = inv.x_T, inv.state["coupled"].to(inv.x_T)
    p = float(inv.config.get("mix", 0.93))
    for i in range(len(schedule)):
        t = float(schedule.timesteps[i])
        A, B = samplers.coefficients(model.prediction, *schedule.levels(i))
        x_mid = A * x + B * model.predict(y, t, condition)
        y_mid = A * y + B * model.predict(x_mid, t, condition)
        x = p * x_mid + (1 - p) * y_mid
        y = p * y_mid + (1 - p) * x
    return x


@register("edict", sample=sample, cost="2 NFE per step, exact (coupled latent)", target_negative="source",
          state={"coupled": COUPLED})
@torch.no_grad()
def invert(model, z0, condition, schedule, *, mix: float = 0.93, keep_trajectory: bool = True):
    """Exactly invertible coupled sampler (x, y) with mixing weight ``mix`` (paper: 0.93)."""
    if not 0.0 < mix <= 1.0:
        raise InversaError(f"edict mix must be in (0, 1], got {mix}")
    x, y, rec = z0, z0.clone(), Recorder(model, z0)
    for i in rec.schedule(schedule, "edict"):
        t = float(schedule.timesteps[i])
        A, B = samplers.coefficients(model.prediction, *schedule.levels(i))
        y_mid = (y - (1 - mix) * x) / mix
        x_mid = (x - (1 - mix) * y_mid) / mix
        y = (y_mid - B * model.predict(x_mid, t, condition)) / A
        x = (x_mid - B * model.predict(y, t, condition)) / A
        rec.record(x)
    return rec.trace(x, {"coupled": y}, keep_trajectory)
