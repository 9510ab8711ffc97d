"""Fixed-point inversion (ReNoise / AIDI style): solve x_i = g(x_i) for every step.

``g(x) = invert_step(x_{i+1}, out(x))`` is the exact inverse step with the network
evaluated at the unknown x_i. One evaluation gives both ``g(x)`` and the residual of
``x`` (``step(x) - x_{i+1} = -A (g(x) - x)``), so stopping costs nothing extra.
Variants: ``plain`` iteration, ``average`` (ReNoise: average the outputs of the
iterations), and ``anderson`` acceleration (type II, per sample; the solver of
:func:`inversa.core.solvers.solve_anderson`, of which ``plain`` is depth 1).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.solvers import Monitor, StepProblem, msr, next_where, per_row, solve_anderson
from inversa.methods import Recorder, register

VARIANTS = ("plain", "average", "anderson")


def solve_step(model, x_next: Tensor, t: float, condition, levels, *, iters: int = 10, tol: float = 1e-10,
               variant: str = "anderson", depth: int = 4, average_from: int = 1, guidance=None,
               x_init: Tensor | None = None):
    """Solve one inverse step by ``iters`` fixed-point iterations with per-sample convergence masks.

    Returns ``(x_i, info)``: a sample below ``tol`` (mean squared residual) returns that iterate, one at the
    cap the next iterate (so one iteration from ``x_{i+1}`` is the naive inverse step); ``info`` has the best
    evaluated residual and the iterations per sample. Starts from ``x_init`` or ``x_{i+1}``.
    """
    if variant not in VARIANTS:
        raise InversaError(f"unknown fixed-point variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    problem = StepProblem(model, t, condition, levels, x_next, guidance)
    x = x_next if x_init is None else x_init
    if variant == "average":
        return _renoise(problem, x, iters, tol, average_from)
    return solve_anderson(problem, x, eta=tol, max_iters=iters, depth=depth if variant == "anderson" else 1,
                          last=float("inf"))


def _renoise(problem: StepProblem, x: Tensor, iters: int, tol: float, average_from: int):
    """ReNoise's averaged fixed point: from iteration ``average_from`` (0-based) on, ``g`` uses the mean of the
    outputs of the iterations since then."""
    vdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(vdtype).clone()
    mon = Monitor(x, tol, 0.0, iters, 0)
    total, count = torch.zeros_like(x), torch.zeros(x.shape[0], dtype=torch.long)
    while mon.active.any():
        idx = mon.idx()
        r, out = problem.residual(x[idx], idx)
        mon.record(idx, x[idx], msr(r))
        late = mon.iters[idx] > average_from
        total[idx[late]] += out[late]
        count[idx[late]] += 1
        mean = out.clone()
        mean[late] = total[idx[late]] / per_row(count[idx[late]], out)
        x[idx] = (problem.target[idx].to(vdtype) - problem.B * mean) / problem.A
        mon.close()
    return next_where(mon.res > mon.eta, x, mon.best), mon.info()


@register("fixed_point", cost="K NFE per step (K = iters, early stop on tol)")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, iters: int = 10, tol: float = 1e-10,
           variant: Literal[VARIANTS] = "anderson", depth: int = 4, average_from: int = 1, keep_trajectory: bool = True):
    """Fixed-point iteration per step, plain / averaged (ReNoise) / Anderson-accelerated."""
    x, rec = z0, Recorder(model, z0)
    for i in rec.schedule(schedule, "fixed_point"):
        x, info = solve_step(model, x, float(schedule.timesteps[i]), condition, schedule.levels(i), iters=iters,
                             tol=tol, variant=variant, depth=depth, average_from=average_from)
        x = x.to(z0.dtype)
        rec.record(x, residual=info["residual"].tolist(), iters=info["iters"].tolist())
    return rec.trace(x, keep_trajectory=keep_trajectory)
