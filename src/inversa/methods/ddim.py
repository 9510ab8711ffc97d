"""Naive DDIM / flow-Euler inversion: the inverse step with the prediction made one level early."""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.methods import Recorder, Trace, register


def naive_step(model, x_next, t, condition, levels, guidance=None):
    """x_i from x_{i+1}, using the network output at x_{i+1} in place of the unknown one at x_i."""
    out = model.predict(x_next, t, condition, guidance)
    return samplers.invert_step(model.prediction, x_next, out, *levels), out


@torch.no_grad()
def naive_inversion(model, z0, condition, schedule, guidance=None, desc: str = "ddim"):
    """``([x_0 (= x_T), ..., x_N (= z0)], per-step diagnostics)`` of naive inversion.

    ``guidance=1.0`` gives the pivot trajectory of Null-text and Direct inversion: the
    conditional prompt alone, which guidance 1 would reproduce almost exactly.
    """
    x, rec = z0, Recorder(model, z0)
    for i in rec.schedule(schedule, desc):
        x, _ = naive_step(model, x, float(schedule.timesteps[i]), condition, schedule.levels(i), guidance)
        rec.record(x, iters=1)
    return rec.states, rec.steps


@register("ddim", cost="1 NFE per step")
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """Run the sampler backwards with e(x_{t-1}) in place of e(x_t) (Song et al. 2021)."""
    states, steps = naive_inversion(model, z0, condition, schedule)
    return Trace(states[0], states if keep_trajectory else None, {}, steps)
