"""POLARIS: a closed-form guidance scale per step during CFG inversion, replayed when sampling.

Naive inversion errs by the change of the guided output between consecutive steps,
``du + w (dc - du)`` with ``du = e_u^(i) - e_u^(i-1)``, ``dc = e_c^(i) - e_c^(i-1)``.
Its least-squares minimiser is ``w_i = <du, du - dc> / ||du - dc||^2`` (clamped to
[0, 15]; 1 for the first step or a vanishing denominator). The scales are recorded
per sample in ``state['guidance_w']`` keyed by ``state['guidance_t']``, which
``api.denoise`` replays, so reconstruction and editing use the same scales.
"""
from __future__ import annotations

from typing import Literal

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.methods import SHARED, Recorder, StateKey, register
from inversa.methods.fixed_point import VARIANTS, solve_step

BASES = ("ddim", "fixed_point")


def polaris_scale(u, c, prev_u, prev_c, low: float = 0.0, high: float = 15.0, tiny: float = 1e-6):
    """Per-sample ``w = <du, du - dc> / ||du - dc||^2``, clamped; 1 where there is no previous step (float64, CPU)."""
    n = u.shape[0]
    if prev_u is None:
        return torch.ones(n, dtype=torch.float64)
    du = (u - prev_u).flatten(1).double()
    dd = du - (c - prev_c).flatten(1).double()
    den = dd.pow(2).sum(1)
    w = (du * dd).sum(1) / den.clamp_min(tiny)
    return torch.where(den > tiny, w.clamp(low, high), torch.ones_like(w)).cpu()  # per-sample scalars: CPU


@register("polaris", cost="base cost (+1 NFE per step with base=fixed_point)", guided=True,
          state={"guidance_t": SHARED, "guidance_w": StateKey()})
@torch.no_grad()
def invert(model, z0, condition, schedule, *, base: Literal[BASES] = "ddim", iters: int = 10, tol: float = 1e-10,
           variant: Literal[VARIANTS] = "anderson", depth: int = 4, w_max: float = 15.0, keep_trajectory: bool = True):
    """CFG inversion with the per-step guidance scale that cancels the naive step's error (POLARIS)."""
    if base not in BASES:
        raise InversaError(f"unknown polaris base {base!r}; expected one of {', '.join(BASES)}")
    if not condition.guided:
        raise InversaError("polaris needs classifier-free guidance: give a guidance scale other than 1")
    x, rec = z0, Recorder(model, z0)
    prev_u = prev_c = None
    ts, ws = [], []
    for i in rec.schedule(schedule, f"polaris[{base}]"):
        t, levels = float(schedule.timesteps[i]), schedule.levels(i)
        u, c = model.predict_parts(x, t, condition)
        w = polaris_scale(u, c, prev_u, prev_c, high=w_max)
        prev_u, prev_c = u, c
        out = u + w.to(u).view(-1, *([1] * (u.ndim - 1))) * (c - u)
        x_naive = samplers.invert_step(model.prediction, x, out, *levels)
        info = {}
        if base == "fixed_point":
            x_naive, info = solve_step(model, x, t, condition, levels, iters=iters, tol=tol, variant=variant,
                                       depth=depth, guidance=w, x_init=x_naive)
        x = x_naive
        ts.insert(0, t)
        ws.insert(0, w)
        solved = {"residual": info["residual"].tolist(), "iters": info["iters"].tolist()} if info else {}
        rec.record(x, guidance=w.tolist(), **solved)
    state = {"guidance_t": torch.tensor(ts, dtype=torch.float64), "guidance_w": torch.stack(ws)}
    return rec.trace(x, state, keep_trajectory)
