"""PreciseInv: per step, find x_i whose sampler step lands on the already-solved x_{i+1}.

The residual of step i is ``r(x) = A x + B out(x) - x_{i+1}`` (samplers.coefficients),
so the result is a plain ``x_T`` that the stock deterministic sampler maps back to the
latent. Every step starts from one naive inverse step (also for flow models, where the
paper had none). ``solver="paper"`` is the paper's AdamW on ``eps`` (the baseline);
``hybrid`` (default: Anderson, with one Newton-GMRES probe where it slows, Newton or L-BFGS only where they pay), ``newton``, ``lbfgs``,
``gauss_newton`` and ``anderson`` are the solvers of :mod:`inversa.core.solvers`.
``sampler="ddpm"`` instead keeps DDPM noise maps in closed form (edit-friendly: x_i drawn
independently from q(x_i | z0), z_i = (x_{i+1} - mu(x_i)) / s_i) and uses the solver only
for noiseless steps (the last one), so DDPM sampling with the stored maps reproduces the latent.

Stopping: ``residual_tol`` is relative to the step's scale, ``|r| <= residual_tol |x_{i+1}|``
(root mean squares per sample), floored at 25 dtype eps (float32: 3.0e-6); ``eta`` is the
paper's absolute mean squared residual (presets: fast 1e-2, precise 1e-5, the ``paper``
solver's default and its only rule). A sample stops at whichever target it reaches first.

| code | paper |
|---|---|
| ``x_next`` | x_{i+1}*, the solved state one step cleaner |
| ``A x + B out(x)`` | the sampler step mu(x_i) |
| ``eta`` | the loss threshold eta |
| ``lr`` | the AdamW learning rate |
"""
from __future__ import annotations

from typing import Literal

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.core.solvers import (JVPS, SOLVERS, StepProblem, msr, solve_anderson, solve_gauss_newton, solve_hybrid,
    solve_lbfgs, solve_newton, solve_paper)
from inversa.methods import Recorder, register
from inversa.methods.ddpm_edit_friendly import NOISE_MAPS

SAMPLERS = ("ddim", "ddpm")
PAPER_ETA = {"fast": 1e-2, "precise": 1e-5}
CAPS = {"hybrid": 200, "newton": 10, "lbfgs": 100, "paper": 100, "gauss_newton": 10, "anderson": 20}  # max_iters=None


def paper_lr(model) -> float:
    """The paper's AdamW learning rate, which each family declares (SD1.4 0.1, LCM-SD1.5 / SDXL 0.05, SD3 0.025)."""
    return model.paper_lr if model.paper_lr is not None else 0.025 if model.prediction == "flow" else 0.1


DEFAULT_TOL = 1e-9
# a row at its cap returns Anderson's next, unevaluated iterate (as fixed_point does: at equal calls the two
# match) while its last call set its best residual; where Anderson stalls or oscillates, the best evaluated one
# (on a random UNet at 2 steps the next iterate of an oscillating row lost 25% in latent MSE)
DIVERGING = 1.0


def targets(model, x_next, eta: float, residual_tol: float, noise=None):
    """Per-sample mean squared residual to reach: ``eta`` (absolute) or ``residual_tol`` (relative), the looser.

    The relative target never goes below 25 epsilon of the solver's dtype (float32, also the state
    around a half-precision network: 3.0e-6): a float32 network's output carries rounding of about
    that size, so below it every solver crawls to its iteration cap; a higher floor (3.5e-5) let
    fixed_point anderson's absolute 1e-10 go lower in the same time (tiny SD3, the embedded model).
    ``noise`` (``B out``, the network's share of the step) adds the network's own rounding: a
    residual below ``4 eps |B out|`` (bfloat16: 2^-5 of it; the rounding of many bfloat16 layers, the
    tiny random SD's easy step plateaus at 2.3 eps) is noise that no solver can remove.
    """
    dtype = getattr(model, "dtype", x_next.dtype)
    floor = 25 * torch.finfo(torch.promote_types(dtype, torch.float32)).eps
    goal = max(residual_tol, floor) ** 2 * msr(x_next)
    if noise is not None:
        goal = torch.maximum(goal, (4 * torch.finfo(dtype).eps) ** 2 * msr(noise))
    return goal.clamp_min(eta)


def solve(model, x_next, t, condition, levels, *, solver="hybrid", eta=None, residual_tol=DEFAULT_TOL, rtol=0.0,
          max_iters=None, patience=None, lr=None, krylov=8, forcing=1e-3, jvp="fd", cg_iters=8, depth=5,
          warm_start=True, z0=None, guidance=None):
    """Solve one step for x_i given x_{i+1}; returns (x_i, info) with per-sample residual and iterations."""
    if solver not in SOLVERS:
        raise InversaError(f"unknown preciseinv solver {solver!r}; expected one of {', '.join(SOLVERS)}")
    problem = StepProblem(model, t, condition, levels, x_next, guidance)
    noise = seed = None
    if warm_start:
        out = model.predict(x_next, t, condition, guidance).to(x_next.dtype)
        x_init = samplers.invert_step(model.prediction, x_next, out, *levels)
        noise = problem.B * out
        seed = (x_next, problem.A * x_next + noise - x_next)  # x_next, evaluated: its image is x_init
    else:
        x_init = x_next.clone()
    cap = CAPS[solver] if max_iters is None else max_iters
    if solver == "paper":  # the baseline stops on the paper's absolute eta only
        return solve_paper(problem, x_init, z0, levels[0], levels[1], lr=paper_lr(model) if lr is None else lr,
                           eta=PAPER_ETA["precise"] if eta is None else eta, rtol=rtol, max_iters=cap,
                           patience=0 if patience is None else patience)
    goal = targets(model, x_next, eta or 0.0, residual_tol, noise)
    if solver == "lbfgs":
        return solve_lbfgs(problem, x_init, eta=goal, rtol=rtol, max_iters=cap, patience=patience or 10)
    patience = 3 if patience is None else patience
    calls = cap - (seed is not None)  # the Anderson solvers' cap counts network calls, the warm start's too
    if solver == "hybrid":
        return solve_hybrid(problem, x_init, eta=goal, rtol=rtol, max_iters=calls, patience=patience,
                            krylov=krylov, forcing=forcing, jvp=jvp, depth=depth, seed=seed, last=DIVERGING)
    if solver == "newton":
        return solve_newton(problem, x_init, eta=goal, rtol=rtol, max_iters=cap, patience=patience,
                            krylov=krylov, forcing=forcing, jvp=jvp)
    if solver == "gauss_newton":
        return solve_gauss_newton(problem, x_init, eta=goal, rtol=rtol, max_iters=cap, patience=patience,
                                  cg_iters=cg_iters, jvp=jvp)
    return solve_anderson(problem, x_init, eta=goal, max_iters=calls, depth=depth, seed=seed, last=DIVERGING)


@register("preciseinv", cost="(NFE per solver iteration) x iters per step", state=NOISE_MAPS)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, solver: Literal[SOLVERS] = "hybrid", residual_tol: float = DEFAULT_TOL,
           eta: float | None = None, rtol: float = 0.0, max_iters: int | None = None,
           patience: int | None = None, lr: float | None = None, krylov: int = 8, forcing: float = 1e-3,
           jvp: Literal[JVPS] = "fd", cg_iters: int = 8, depth: int = 5, warm_start: bool = True,
           sampler: Literal[SAMPLERS] = "ddim", seed: int = 0, keep_trajectory: bool = True):
    """Optimise each step's noisy state so one sampler step maps it onto the solved next state (PreciseInv).

    ``residual_tol`` is the per-step residual relative to the step's scale; ``eta`` adds the paper's
    absolute mean squared target (1e-2 fast, 1e-5 precise; None: the ``paper`` solver's 1e-5, none for
    the others). ``max_iters`` caps each solver's iterations (None: each solver's own default); for
    ``hybrid`` and ``anderson`` it counts network calls per step, the warm start's included (hybrid: 200,
    Newton and L-BFGS within them where Anderson's probe shows they pay; 1: the naive warm start; at k the
    result is fixed_point's at k iterations, or better). ``patience`` and ``lr`` (None: each solver's default, the family's paper rate) likewise.
    """
    if sampler not in SAMPLERS:
        raise InversaError(f"unknown preciseinv sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if sampler == "ddpm" and model.prediction == "flow":
        raise InversaError("sampler=ddpm needs a variance-preserving model (flow models have no DDPM step)")
    if residual_tol <= 0:
        raise InversaError(f"residual_tol must be positive, got {residual_tol}")
    opts = dict(solver=solver, eta=eta, residual_tol=residual_tol, rtol=rtol, max_iters=max_iters, patience=patience,
                lr=lr, krylov=krylov, forcing=forcing, jvp=jvp, cg_iters=cg_iters, depth=depth, warm_start=warm_start)
    n = z0.shape[0]
    gen = torch.Generator().manual_seed(seed)
    x, rec = z0, Recorder(model, z0)
    maps = torch.zeros(len(schedule), *z0.shape, dtype=z0.dtype, device=z0.device) if sampler == "ddpm" else None
    for i in rec.schedule(schedule, f"preciseinv[{solver}]"):
        levels, t = schedule.levels(i), float(schedule.timesteps[i])
        noise = samplers.ddpm_noise(*levels) if sampler == "ddpm" else 0.0
        if noise > 0.0:  # closed form: fresh x_i from q(x_i | z0), noise map from the DDPM step
            x_i = levels[0] * z0 + levels[1] * torch.randn(z0.shape, generator=gen, dtype=z0.dtype).to(z0.device)
            out = model.predict(x_i, t, condition)
            mu = samplers.step(model.prediction, x_i, out, *levels, noise=noise)
            maps[i] = (x - mu) / noise
            info = {"residual": torch.zeros(n, dtype=torch.float64), "iters": torch.zeros(n, dtype=torch.long)}
        else:
            x_i, info = solve(model, x, t, condition, levels, z0=z0, **opts)
        x = x_i.to(z0.dtype)
        rec.record(x, residual=info["residual"].tolist(), iters=info["iters"].tolist())
    return rec.trace(x, {"noise_maps": maps} if maps is not None else {}, keep_trajectory)
