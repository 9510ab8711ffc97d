"""Direct Inversion (Ju et al. 2024, "PnP Inversion"): per-step offsets back onto the DDIM pivot.

Invert with DDIM at guidance 1, then run the guided sampler from ``x_T`` and record
at each step the offset between the pivot state and where the guided step landed;
the sampler continues from the pivot. Adding the offsets back (the *source branch*,
done by api.denoise_step) reproduces the pivot, hence ``z0``, exactly up to float
rounding. In editing only the source branch gets the offsets; the target branch is
guided by it (attention maps).
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.methods import Recorder, StateKey, register
from inversa.methods.ddim import naive_inversion


@register("direct", cost="1 NFE (inversion) + 1 guided call (2 NFE) per step", guided=True,
          state={"offsets": StateKey(per_step="offsets")})
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """DDIM pivot plus per-step offsets that pin the guided source branch onto it (no optimisation)."""
    pivots, pivot_steps = naive_inversion(model, z0, condition, schedule, guidance=1.0, desc="direct pivot")
    offsets, rec = [], Recorder(model, z0, inverse=False)
    for i in rec.schedule(schedule, "direct"):
        x = pivots[i]
        out = model.predict(x, float(schedule.timesteps[i]), condition)
        landed = samplers.step(model.prediction, x, out, *schedule.levels(i))
        offsets.append(pivots[i + 1] - landed)
        rec.record(None, nfe=pivot_steps[i]["nfe"],
                   offset_rms=offsets[-1].flatten(1).pow(2).mean(1).sqrt().double().tolist())
    return rec.trace(pivots[0], {"offsets": torch.stack(offsets)}, keep_trajectory, trajectory=pivots)
