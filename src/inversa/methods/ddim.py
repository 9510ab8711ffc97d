"""Naive DDIM / flow-Euler inversion: the inverse step with the prediction made one level early."""
from __future__ import annotations

import time

import torch

from .. import samplers
from . import Trace, backwards, register


def naive_step(model, x_next, t, condition, levels, guidance=None):
    """x_i from x_{i+1}, using the network output at x_{i+1} in place of the unknown one at x_i."""
    out = model.predict(x_next, t, condition, guidance)
    return samplers.invert_step(model.prediction, x_next, out, *levels), out


@register("ddim", cost="1 NFE per step")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """Run the sampler backwards with e(x_{t-1}) in place of e(x_t) (Song et al. 2021)."""
    x, states, steps = z0, [z0], []
    for i in backwards(schedule, "ddim"):
        start = time.perf_counter()
        x, _ = naive_step(model, x, float(schedule.timesteps[i]), condition, schedule.levels(i))
        states.insert(0, x)
        steps.insert(0, {"step": i, "iters": 1, "nfe": 1 * (2 if condition.guided else 1),
                         "seconds": time.perf_counter() - start})
    return Trace(x, states if keep_trajectory else None, {}, steps)
