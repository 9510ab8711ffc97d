"""Fixed-point inversion (ReNoise / AIDI style): solve x_i = g(x_i) for every step.

``g(x) = invert_step(x_{i+1}, out(x))`` is the exact inverse step with the network
evaluated at the unknown x_i. One evaluation gives both ``g(x)`` and the residual of
``x`` (``step(x) - x_{i+1} = -A (g(x) - x)``), so stopping costs nothing extra.
Variants: ``plain`` iteration, ``average`` (ReNoise: average the outputs of the
iterations), and ``anderson`` acceleration (type II, per sample).
"""
from __future__ import annotations

import time
from typing import Literal

import torch
from torch import Tensor

from inversa.core import samplers
from inversa.core.solvers import anderson_mix, select_rows
from inversa.methods import Trace, backwards, register

VARIANTS = ("plain", "average", "anderson")


def solve_step(model, x_next: Tensor, t: float, condition, levels, *, iters: int = 10, tol: float = 1e-10,
               variant: str = "anderson", depth: int = 4, average_from: int = 1, guidance=None,
               x_init: Tensor | None = None):
    """Solve one inverse step by fixed-point iteration with per-sample convergence masks.

    Returns ``(x_i, info)``; ``info`` has the last evaluated mean squared residual per
    sample, iterations and network evaluations. Starts from ``x_init`` or ``x_{i+1}``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown fixed-point variant {variant!r}; expected one of {VARIANTS}")
    A, B = samplers.coefficients(model.prediction, *levels)
    x = (x_next if x_init is None else x_init).clone()
    n = x.shape[0]
    active = torch.ones(n, dtype=torch.bool)
    residual = torch.full((n,), float("inf"), dtype=torch.float64)
    used = torch.zeros(n, dtype=torch.long)
    hist_x, hist_g, outs = [], [], []
    for k in range(iters):
        idx = active.nonzero().squeeze(1)
        xa, target = x[idx], x_next[idx]
        w = guidance[idx] if torch.is_tensor(guidance) and guidance.ndim else guidance
        cond = condition if len(idx) == n else select_rows(condition, idx)
        out = model.predict(xa, t, cond, w)
        used[idx] += 1
        res = (A * xa + B * out - target).flatten(1).pow(2).mean(1).double().cpu()
        residual[idx] = res
        g = (target - B * out) / A
        if variant == "average":
            full_out = torch.zeros_like(x)
            full_out[idx] = out
            outs.append(full_out)
            if k >= average_from:
                g = (target - B * torch.stack(outs[average_from:]).mean(0)[idx]) / A
        if variant == "anderson":  # histories are full-batch; rows of finished samples are never read
            full_x, full_g = x.clone(), x.clone()
            full_x[idx], full_g[idx] = xa, g
            hist_x, hist_g = (hist_x + [full_x])[-depth:], (hist_g + [full_g])[-depth:]
            if len(hist_x) > 1:
                g = anderson_mix([h[idx] for h in hist_x], [h[idx] for h in hist_g])
        done = res < tol
        x[idx[~done]] = g[~done]
        active[idx[done]] = False
        if not active.any():
            break
    return x, {"residual": residual, "iters": used}


@register("fixed_point", cost="K NFE per step (K = iters, early stop on tol)")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, iters: int = 10, tol: float = 1e-10,
           variant: Literal[VARIANTS] = "anderson", depth: int = 4, average_from: int = 1, keep_trajectory: bool = True):
    """Fixed-point iteration per step, plain / averaged (ReNoise) / Anderson-accelerated."""
    x, states, steps = z0, [z0], []
    per_nfe = 2 if condition.guided else 1
    for i in backwards(schedule, "fixed_point"):
        start = time.perf_counter()
        x, info = solve_step(model, x, float(schedule.timesteps[i]), condition, schedule.levels(i), iters=iters,
                             tol=tol, variant=variant, depth=depth, average_from=average_from)
        states.insert(0, x)
        steps.insert(0, {"step": i, "residual": info["residual"].tolist(), "iters": info["iters"].tolist(),
                         "nfe": int(info["iters"].max()) * per_nfe, "seconds": time.perf_counter() - start})
    return Trace(x, states if keep_trajectory else None, {}, steps)
