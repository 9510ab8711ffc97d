"""BDIA (Zhang et al. 2023): bi-directional integration makes DDIM exactly invertible.

Sampling uses the two previous states: ``x_{k+1} = gamma (x_{k-1} - R_k) + F_k`` where
``F_k`` moves ``x_k`` one level forward (a DDIM step) and ``R_k`` one level back, both
with the one prediction at ``x_k``. Solving for ``x_{k-1}`` needs no unknown
prediction, so inversion is exact once the pair ``(x_{N-1}, x_N = z0)`` is set; the
single naive step that makes ``x_{N-1}`` is carried in the pair, so reconstruction
is exact too. ``x_1`` is kept in ``state["coupled"]``.
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.methods import Recorder, register
from inversa.methods.ddim import naive_step
from inversa.methods.edict import COUPLED


def _moves(model, x, k, schedule, condition):
    """(F_k, R_k): ``x_k`` moved to level k+1 and to level k-1 with the prediction at ``x_k``."""
    a, s = schedule.alphas.tolist(), schedule.sigmas.tolist()
    out = model.predict(x, float(schedule.timesteps[k]), condition)
    fwd = samplers.renoise(model.prediction, x, out, a[k], s[k], a[k + 1], s[k + 1])
    back = samplers.renoise(model.prediction, x, out, a[k], s[k], a[k - 1], s[k - 1])
    return fwd, back


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """The BDIA sampler from the pair ``(x_0 = x_T, x_1 = coupled)``."""
    gamma = float(inv.config.get("gamma", 1.0))
    x_prev = inv.x_T
    if len(schedule) == 1:
        out = model.predict(x_prev, float(schedule.timesteps[0]), condition)
        return samplers.step(model.prediction, x_prev, out, *schedule.levels(0))
    x = inv.state["coupled"].to(x_prev)
    for k in range(1, len(schedule)):
        fwd, back = _moves(model, x, k, schedule, condition)
        x_prev, x = x, gamma * (x_prev - back) + fwd
    return x


@register("bdia", sample=sample, cost="1 NFE per step, exact (keeps the second state)", target_negative="source",
          state={"coupled": COUPLED})
@torch.no_grad()
def invert(model, z0, condition, schedule, *, gamma: float = 1.0, keep_trajectory: bool = True):
    """Bi-directional integration approximation: exact inversion of a two-step DDIM recursion."""
    if gamma == 0.0:
        raise InversaError("bdia needs gamma != 0 (gamma = 0 is plain DDIM, which is not exactly invertible)")
    last = len(schedule) - 1
    x_next, x, rec = z0, z0, Recorder(model, z0)
    for i in rec.schedule(schedule, "bdia"):
        if i == last:  # the one naive step that starts the pair (x_{N-1}, x_N = z0)
            x = naive_step(model, z0, float(schedule.timesteps[-1]), condition, schedule.levels(last))[0]
        else:  # x_i from the pair (x_{i+1}, x_{i+2})
            fwd, back = _moves(model, x, i + 1, schedule, condition)
            x_next, x = x, (x_next - fwd) / gamma + back
        rec.record(x)
    return rec.trace(x, {"coupled": x_next}, keep_trajectory)  # x_next is z0 for 1 step
