"""Direct Inversion (Ju et al. 2024, "PnP Inversion"): per-step offsets back onto the DDIM pivot.

Invert with DDIM at guidance 1, then run the guided sampler from ``x_T`` and record
at each step the offset between the pivot state and where the guided step landed;
the sampler continues from the pivot. Adding the offsets back (the *source branch*,
done by api.denoise_step) reproduces the pivot, hence ``z0``, exactly up to float
rounding. In editing only the source branch gets the offsets; the target branch is
guided by it (attention maps).
"""
from __future__ import annotations

import time

import torch

from .. import samplers
from . import Trace, register, step_info
from .ddim import naive_inversion


@register("direct", cost="1 NFE (inversion) + 1 guided call (2 NFE) per step")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """DDIM pivot plus per-step offsets that pin the guided source branch onto it (no optimisation)."""
    pivots, _ = naive_inversion(model, z0, condition, schedule, guidance=1.0, desc="direct pivot")
    per = 2 if condition.guided else 1
    offsets, steps = [], []
    for i in range(len(schedule)):
        start = time.perf_counter()
        x = pivots[i]
        out = model.predict(x, float(schedule.timesteps[i]), condition)
        landed = samplers.step(model.prediction, x, out, *schedule.levels(i))
        offsets.append(pivots[i + 1] - landed)
        steps.append(step_info(i, 1 + per, time.perf_counter() - start,
                               offset_rms=offsets[-1].flatten(1).pow(2).mean(1).sqrt().double().tolist()))
    return Trace(pivots[0], pivots if keep_trajectory else None, {"offsets": torch.stack(offsets)}, steps)
