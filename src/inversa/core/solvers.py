"""Per-step root finders for ``r(x) = A x + B out(x) - y = 0`` (one sampler step landing on ``y``).

Every solver works on a batch with per-sample convergence masks: finished samples
leave the batch, so the network only ever sees the samples still being solved.
A sample stops when its mean squared residual is below its target (``eta``: a float
or one value per sample, see ``methods.preciseinv.targets``), below ``rtol`` times
its starting residual, after ``max_iters`` iterations, or when its best residual has
not improved for ``patience`` iterations. Every solver
returns the best iterate it evaluated, so the reported residual is that of the answer.

Solvers:
- ``paper``: AdamW on ``eps`` with ``x = alpha z0 + sigma eps`` (PreciseInv, NeurIPS 2025),
  one forward + backward per iteration.
- ``newton``: Jacobian-free Newton-Krylov. ``J = A I + B d out/dx`` is applied by a
  finite difference (one forward) or forward-mode AD; the Newton system ``J d = -r``
  is solved by GMRES per sample. Exact in one iteration on an affine model.
- ``gauss_newton``: ``(J^T J) d = -J^T r`` by conjugate gradients (JVP by finite
  difference, VJP by reverse mode on a graph built once per iteration).
- ``anderson``: Anderson acceleration of the fixed-point form ``x = x - r(x) / A``.
- ``lbfgs``: limited-memory BFGS on the mean squared residual (gradient by reverse mode,
  per-sample Armijo backtracking): slow but monotone where Newton-GMRES stagnates.
- ``hybrid``: Anderson; where it slows, one Newton-GMRES iteration as a probe, Newton kept only where it
  gains more per network call than Anderson's last calls, and L-BFGS after it. Why: on the trained
  networks Anderson keeps gaining (1.2-2x per 10 calls on the hardest step) where Newton loses (its linear
  model is wrong at the step length needed); on the affine oracle Newton is exact in one iteration; on a
  random or badly conditioned network (the tiny random SD at 2 steps: ``|B d out/dx| ~ 2.3 |A|``) the
  spectrum of ``J`` surrounds 0, Krylov methods and Anderson stagnate, and only descent on ``|r|^2``
  (needing ``J^T``, a backward pass) keeps making progress.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from inversa.core.errors import InversaError

SOLVERS = ("hybrid", "newton", "lbfgs", "paper", "gauss_newton", "anderson")
JVPS = ("fd", "forward")


def msr(r: Tensor) -> Tensor:
    """Mean squared residual per sample, float64 on the CPU, where all per-sample bookkeeping lives."""
    return r.detach().flatten(1).double().pow(2).mean(1).cpu()


def per_row(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample vector shaped to broadcast over ``like`` (and moved to its device)."""
    return v.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def select_rows(condition, idx):
    """The condition of the samples ``idx`` (a prompt shared by the batch stays as it is)."""
    from dataclasses import replace

    cond = condition.cond if len(condition.cond) == 1 else condition.cond.select(idx)
    uncond = condition.uncond
    if uncond is not None and len(uncond) != 1:
        uncond = uncond.select(idx)
    return replace(condition, cond=cond, uncond=uncond)


@dataclass
class StepProblem:
    """One inverse step: find ``x`` with ``A x + B out(x) = target`` (all samples, or the rows ``idx``)."""

    model: object
    t: float
    condition: object
    levels: tuple
    target: Tensor
    guidance: object = None
    noise: float = 0.0

    def __post_init__(self):
        from inversa.core.samplers import coefficients

        self.A, self.B = coefficients(self.model.prediction, *self.levels, noise=self.noise)

    def output(self, x: Tensor, idx: Tensor) -> Tensor:
        n = self.target.shape[0]
        cond = self.condition if len(idx) == n and bool((idx == torch.arange(n)).all()) else select_rows(self.condition, idx)
        w = self.guidance[idx] if torch.is_tensor(self.guidance) and self.guidance.ndim else self.guidance
        return self.model.predict(x, self.t, cond, w).to(x.dtype)

    def rows(self, idx: Tensor) -> "StepProblem":
        """The same step for the samples ``idx`` only."""
        from dataclasses import replace

        w = self.guidance[idx] if torch.is_tensor(self.guidance) and self.guidance.ndim else self.guidance
        return replace(self, condition=select_rows(self.condition, idx), target=self.target[idx], guidance=w)

    def residual(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        out = self.output(x, idx)
        return self.A * x + self.B * out - self.target[idx].to(x.dtype), out

    def jvp(self, x: Tensor, out: Tensor, v: Tensor, idx: Tensor, mode: str = "fd") -> Tensor:
        """``J v`` at ``x`` (``out`` = out(x) already known), per sample."""
        if mode == "forward":
            import torch.autograd.forward_ad as fwad
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with fwad.dual_level(), sdpa_kernel(SDPBackend.MATH):
                tangent = fwad.unpack_dual(self.output(fwad.make_dual(x, v), idx)).tangent
            return self.A * v + self.B * tangent
        if mode != "fd":
            raise InversaError(f"unknown jvp mode {mode!r}; expected one of {JVPS}")
        eps = torch.finfo(getattr(self.model, "dtype", x.dtype)).eps
        vn = v.flatten(1).norm(dim=1).clamp_min(1e-30)
        h = math.sqrt(eps) * (1.0 + x.flatten(1).norm(dim=1)) / vn
        hh = per_row(h, x)
        return self.A * v + self.B * (self.output(x + hh * v, idx) - out) / hh


class Monitor:
    """Per-sample bookkeeping: best iterate, residuals, iterations and the stopping rules."""

    def __init__(self, x: Tensor, eta: float | Tensor, rtol: float, max_iters: int, patience: int):
        n = x.shape[0]
        self.best = x.clone()
        self.res = torch.full((n,), float("inf"), dtype=torch.float64)
        self.res0 = torch.full((n,), float("nan"), dtype=torch.float64)
        self.iters = torch.zeros(n, dtype=torch.long)
        self.stall = torch.zeros(n, dtype=torch.long)
        self.active = torch.ones(n, dtype=torch.bool)
        self.eta = torch.as_tensor(eta, dtype=torch.float64).expand(n)
        self.rtol, self.max_iters, self.patience = rtol, max_iters, patience

    def idx(self) -> Tensor:
        return self.active.nonzero().squeeze(1)

    def record(self, idx: Tensor, x: Tensor, res: Tensor, count: bool = True) -> Tensor:
        """Record evaluated iterates of rows ``idx``; returns which of them improved."""
        first = torch.isnan(self.res0[idx])
        self.res0[idx[first]] = res[first]
        better = res < self.res[idx]
        significant = res < self.res[idx] * (1 - 1e-3)
        self.stall[idx] = torch.where(significant, 0, self.stall[idx] + (1 if count else 0))
        self.best[idx[better]] = x[better].to(self.best.dtype)
        self.res[idx[better]] = res[better]
        if count:
            self.iters[idx] += 1
        return better

    def close(self) -> None:
        """Deactivate the rows that meet a stopping rule."""
        done = self.res <= self.eta
        if self.rtol > 0:
            done |= self.res <= self.rtol * self.res0
        done |= self.iters >= self.max_iters
        if self.patience > 0:
            done |= self.stall >= self.patience
        self.active &= ~done

    def info(self) -> dict:
        return {"residual": self.res.clone(), "initial": self.res0.clone(), "iters": self.iters.clone()}


# --- paper: AdamW on eps -----------------------------------------------------------------------------
def solve_paper(problem: StepProblem, x_init: Tensor, z0: Tensor, alpha: float, sigma: float, *, lr: float,
                eta: float, rtol: float = 0.0, max_iters: int = 100, patience: int = 0,
                betas=(0.9, 0.999), weight_decay: float = 0.01, adam_eps: float = 1e-8):
    """PreciseInv's optimiser: AdamW on ``eps`` in ``x = alpha z0 + sigma eps``, loss = mean squared residual.

    Written out elementwise (same update as torch.optim.AdamW) so finished samples
    can leave the batch; the variable stays float32 whatever the model dtype.
    """
    vdtype = torch.float64 if x_init.dtype == torch.float64 else torch.float32
    z0 = z0.to(vdtype)
    eps = ((x_init.to(vdtype) - alpha * z0) / sigma).detach()
    m, v = torch.zeros_like(eps), torch.zeros_like(eps)
    mon = Monitor(x_init.to(vdtype), eta, rtol, max_iters, patience)
    b1, b2 = betas
    k = 0
    while mon.active.any():
        idx = mon.idx()
        e = eps[idx].clone().requires_grad_(True)
        with torch.enable_grad():
            x = alpha * z0[idx] + sigma * e
            r, _ = problem.residual(x, idx)
            loss = r.flatten(1).pow(2).mean(1)
            grad, = torch.autograd.grad(loss.sum(), e)
        mon.record(idx, x.detach(), loss.detach().double().cpu())
        mon.close()
        go = mon.active[idx]  # rows that keep going take one AdamW step
        if not go.any():
            break
        k += 1
        rows, g = idx[go], grad[go]
        eps[rows] = eps[rows] * (1 - lr * weight_decay)
        m[rows] = b1 * m[rows] + (1 - b1) * g
        v[rows] = b2 * v[rows] + (1 - b2) * g * g
        step = mon.iters[rows].to(vdtype)  # evaluations so far = AdamW step number of these rows
        mhat = m[rows] / per_row(1 - b1**step, g)
        vhat = v[rows] / per_row(1 - b2**step, g)
        eps[rows] = eps[rows] - lr * mhat / (vhat.sqrt() + adam_eps)
    return mon.best, mon.info()


# --- Newton-Krylov -----------------------------------------------------------------------------------
def gmres(matvec, b: Tensor, max_vectors: int, tol: float) -> Tensor:
    """Batched GMRES from zero: ``argmin ||M d - b||`` per row over the Krylov space, up to ``max_vectors``.

    The basis is float64 on the data's device and each new vector is orthogonalised against all the
    others at once, twice (classical Gram-Schmidt with reorthogonalisation: as stable as modified
    Gram-Schmidt, and two batched products instead of ``2 j`` inner products and device syncs).
    """
    n, shape = b.shape[0], b.shape
    bf = b.flatten(1).double()
    beta = bf.norm(dim=1)
    V = bf.new_zeros(n, max_vectors + 1, bf.shape[1])
    V[:, 0] = bf / beta.clamp_min(1e-300)[:, None]
    beta = beta.cpu()  # the small Hessenberg problem stays on the CPU
    H = torch.zeros(n, max_vectors + 1, max_vectors, dtype=torch.float64)
    e1 = torch.zeros(n, max_vectors + 1, 1, dtype=torch.float64)
    e1[:, 0, 0] = beta
    for j in range(max_vectors):
        w = matvec(V[:, j].to(b.dtype).view(shape)).flatten(1).double()
        basis = V[:, : j + 1]
        for _ in range(2):
            h = (basis @ w[:, :, None]).squeeze(-1)
            w = w - (basis.transpose(1, 2) @ h[:, :, None]).squeeze(-1)
            H[:, : j + 1, j] += h.cpu()
        hn = w.norm(dim=1)
        H[:, j + 1, j] = hn.cpu()
        Hj = H[:, : j + 2, : j + 1]
        y = torch.linalg.lstsq(Hj, e1[:, : j + 2]).solution
        lsres = (e1[:, : j + 2] - Hj @ y).squeeze(-1).norm(dim=1)
        if bool((lsres <= tol * beta).all()) or j == max_vectors - 1:
            break
        V[:, j + 1] = w * ((hn > 1e-14 * beta.to(hn)) / hn.clamp_min(1e-300))[:, None]
    return (V[:, : y.shape[1]].transpose(1, 2) @ y.to(V.device)).squeeze(-1).to(b.dtype).view(shape)


def solve_newton(problem: StepProblem, x_init: Tensor, *, eta, rtol: float = 0.0, max_iters: int = 10,
                 patience: int = 3, krylov: int = 8, forcing: float = 1e-3, jvp: str = "fd",
                 backtrack: int = 2, switch: float = 0.0, rate: Tensor | None = None, least: float = 1.0):
    """Inexact Newton: GMRES on ``J d = -r`` with JVPs, then a per-sample backtracking check.

    With ``rate`` (per sample: the log residual reduction per network call of the solver before), a sample
    whose first iteration gains less per call than that, or less than ``least``-fold in all, stops at once,
    marked ``lost`` in the info: Newton is not worth its 1 + krylov calls there (the trained networks'
    hardest steps, where the linear model fails at the step length needed); ``solve_hybrid`` keeps Anderson.

    With ``switch`` > 0 a sample whose residual falls less than ``switch``-fold on two iterations
    in a row stops (Newton is not converging there; ``solve_hybrid`` hands it to the next stage).
    One slow iteration is not enough: the first step from a poor start often overshoots and is
    halved, and Newton converges quadratically right after (tiny random Flux, 4 steps).
    """
    vdtype = torch.float64 if x_init.dtype == torch.float64 else torch.float32
    x = x_init.to(vdtype).clone()
    mon = Monitor(x, eta, rtol, max_iters, patience)
    idx = mon.idx()
    r, out = problem.residual(x, idx)
    mon.record(idx, x, msr(r), count=False)
    outs, rs = out.clone(), r.clone()  # output and residual at the best iterate of every row
    mon.close()
    slow = torch.zeros(x.shape[0], dtype=torch.long)  # consecutive iterations below the switch rate
    lost = torch.zeros(x.shape[0], dtype=torch.bool)
    first = True
    while mon.active.any():
        idx = mon.idx()
        xb, ob, rb = mon.best[idx].to(vdtype), outs[idx], rs[idx]
        d = gmres(lambda v: problem.jvp(xb, ob, v, idx, jvp), -rb, krylov, forcing)
        before = mon.res[idx].clone()
        attempt = _backtrack(problem, mon, idx, xb, d, outs, rs, backtrack)
        if switch > 0:
            slow[idx] = torch.where(mon.res[idx] * switch > before, slow[idx] + 1, 0)
            mon.active[idx[slow[idx] >= 2]] = False
        if rate is not None and first:
            gain = (before / mon.res[idx]).log() / (1 + krylov + attempt)
            lost[idx] = ((gain <= rate[idx]) | (before < least * mon.res[idx])) & (mon.res[idx] > mon.eta[idx])
            mon.active &= ~lost
        first = False
        mon.close()
    return mon.best, mon.info() | {"lost": lost}


def _backtrack(problem, mon, idx, xb, d, outs, rs, backtrack: int) -> int:
    """The full Newton step first, halved for the rows it made worse (``backtrack`` times); records every
    trial and keeps the output and residual of each row's best. Returns the last attempt's number."""
    scale = torch.ones(len(idx), dtype=xb.dtype)
    pending = torch.arange(len(idx))
    for attempt in range(backtrack + 1):
        sub = idx[pending]
        xn = xb[pending] + per_row(scale[pending], xb) * d[pending]
        rn, on = problem.residual(xn, sub)
        better = mon.record(sub, xn, msr(rn), count=attempt == 0)
        outs[sub[better]], rs[sub[better]] = on[better], rn[better]
        pending = pending[~better]
        if len(pending) == 0:
            break
        scale[pending] *= 0.5
    return attempt


# --- Gauss-Newton with CG on the normal equations ------------------------------------------------------
def solve_gauss_newton(problem: StepProblem, x_init: Tensor, *, eta: float, rtol: float = 0.0, max_iters: int = 10,
                       patience: int = 3, cg_iters: int = 8, jvp: str = "fd"):
    """Gauss-Newton: ``(J^T J) d = -J^T r`` by CG; J v by JVP, J^T u by reverse mode.

    Each trial point is evaluated once, with its graph, and becomes the next
    linearisation point; with no line search, a step that does not lower a
    sample's residual ends that sample.
    """
    vdtype = torch.float64 if x_init.dtype == torch.float64 else torch.float32
    mon = Monitor(x_init.to(vdtype), eta, rtol, max_iters, patience)

    def evaluate(x, idx):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = problem.output(x, idx)
        return x, out, (problem.A * x + problem.B * out - problem.target[idx].to(vdtype)).detach()

    idx = mon.idx()
    x, out, r = evaluate(mon.best[idx].to(vdtype), idx)
    mon.record(idx, x.detach(), msr(r), count=False)
    mon.close()
    while mon.active.any():
        keep = mon.active[idx]  # rows of the evaluated batch still being solved
        sub, xd, od = idx[keep], x.detach()[keep], out.detach()[keep]

        def jt(u, x=x, out=out, keep=keep):
            full = torch.zeros_like(out)
            full[keep] = u.to(out.dtype)
            g, = torch.autograd.grad(out, x, grad_outputs=full, retain_graph=True)
            return problem.A * u + problem.B * g[keep]

        d = _cg(lambda v: jt(problem.jvp(xd, od, v, sub, jvp)), -jt(r[keep]), cg_iters)
        x, out, r = evaluate(xd + d, sub)
        better = mon.record(sub, x.detach(), msr(r))
        mon.active[sub[~better]] = False
        mon.close()
        idx = sub
    return mon.best, mon.info()


def _cg(matvec, b: Tensor, iters: int) -> Tensor:
    """Batched conjugate gradients from zero (per-sample step sizes)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r.flatten(1).double().pow(2).sum(1)
    for _ in range(iters):
        Ap = matvec(p)
        pAp = (p.flatten(1).double() * Ap.flatten(1).double()).sum(1)
        a = torch.where(pAp > 0, rr / pAp.clamp_min(1e-300), torch.zeros_like(rr))
        x = x + per_row(a, x) * p
        r = r - per_row(a, r) * Ap
        rr_new = r.flatten(1).double().pow(2).sum(1)
        if bool((rr_new <= 1e-24 * rr.clamp_min(1e-300)).all()):
            break
        p = r + per_row(rr_new / rr.clamp_min(1e-300), p) * p
        rr = rr_new
    return x


# --- Anderson on the fixed-point form -------------------------------------------------------------------
def anderson_mix(xs: list[Tensor], gs: list[Tensor], reg: float = 1e-10) -> Tensor:
    """Type-II Anderson: the combination of the last iterates ``xs`` and their images ``gs`` that zeroes the
    linearised fixed-point residual ``g - x`` in least squares, per sample (Walker & Ni 2011)."""
    F = torch.stack([(g - x).flatten(1) for x, g in zip(xs, gs)], dim=2).double()  # (B, D, m)
    G = torch.stack([g.flatten(1) for g in gs], dim=2).double()
    dF, dG = F[..., 1:] - F[..., :-1], G[..., 1:] - G[..., :-1]
    gram = dF.transpose(1, 2) @ dF
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None].clamp_min(1e-30)
    gram = gram + reg * scale * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    gamma = torch.linalg.solve(gram, dF.transpose(1, 2) @ F[..., -1:])
    return (G[..., -1:] - dG @ gamma).squeeze(-1).view_as(gs[-1]).to(gs[-1].dtype)


def solve_anderson(problem: StepProblem, x_init: Tensor, *, eta, max_iters: int = 20, patience: int = 0,
                   depth: int = 5, switch: float = 0.0, window: int = 3, seed: tuple | None = None, probe=None,
                   last: float = 0.0):
    """Anderson-accelerated fixed point ``x = (y - B out(x)) / A = x - r(x) / A`` (type II, per sample).

    One network call per iteration; returns the best evaluated iterate, but a row at the cap its next, unevaluated
    one while its last residual is within ``last``-fold of its best (``inf``: always, the fixed-point methods;
    1: PreciseInv, only while the last call set the best). ``depth=1`` is the plain fixed-point iteration. ``seed = (x0,
    r0)``, a point already evaluated whose image is ``x_init`` (the naive warm start), enters the history for free.

    With ``probe(rows, x, rate) -> (x, residual, won)`` and ``switch`` > 0, a sample whose best residual fell
    less than ``switch``-fold over its last ``window`` calls is probed, once: rows the probe won leave
    (``info["handed"]``), the others go on with their history intact. ``rate`` is each row's log residual
    reduction per call over those calls, what the probe must beat per call.
    """
    vdtype = torch.float64 if x_init.dtype == torch.float64 else torch.float32
    x = x_init.to(vdtype).clone()
    n = x.shape[0]
    mon = Monitor(x, eta, 0.0, max_iters, patience)
    hist_x, hist_g = [], []  # full-batch; rows of finished samples are never read
    if seed is not None:
        x0, r0 = seed[0].to(vdtype), seed[1].to(vdtype)
        mon.record(mon.idx(), x0, msr(r0), count=False)
        hist_x, hist_g = [x0.clone()], [x.clone()]
        mon.close()
    trail = [mon.res.clone()]  # best residuals after each call
    probed, handed, latest = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), mon.res.clone()
    while mon.active.any():
        idx = mon.idx()
        r, _ = problem.residual(x[idx], idx)
        latest[idx] = msr(r)  # each row's residual at its last evaluated iterate
        mon.record(idx, x[idx], latest[idx])
        trail.append(mon.res.clone())
        full_g = x.clone()
        full_g[idx] = x[idx] - r / problem.A
        hist_x, hist_g = (hist_x + [x.clone()])[-depth:], (hist_g + [full_g])[-depth:]
        x[idx] = anderson_mix([h[idx] for h in hist_x], [h[idx] for h in hist_g]) if len(hist_x) > 1 else full_g[idx]
        if probe is not None and switch > 0 and len(trail) > window:
            now = idx[(mon.res[idx] * switch > trail[-window - 1][idx]) & ~probed[idx]]
            if len(now):
                probed[now] = True
                rate = _recent_rate(trail, now, window)
                xp, res, won = probe(now, mon.best[now], rate)
                mon.record(now, xp.to(vdtype), res, count=False)
                handed[now[won]] = True
                mon.active &= ~handed
        mon.close()
    capped = mon.res > mon.eta
    going = capped & ~handed & (latest <= last * mon.res)  # not diverging: the next iterate is the better bet
    return next_where(going, x, mon.best), mon.info() | {"handed": handed & capped}


def next_where(capped: Tensor, x: Tensor, best: Tensor) -> Tensor:
    """``x`` (the next iterate) in the rows ``capped`` (a CPU mask), ``best`` in the others."""
    out = best.clone()
    rows = capped.nonzero().squeeze(1).to(x.device)
    out[rows] = x[rows].to(out.dtype)
    return out


def _recent_rate(trail: list[Tensor], rows: Tensor, window: int) -> Tensor:
    """The log reduction per call of each row's best residual over its last ``window`` calls (``trail``: the
    best residuals after each call, all rows active throughout; the seed's entry may be inf)."""
    t = torch.stack([v[rows] for v in trail[-window - 1:]])  # (k + 1, rows)
    start = torch.isinf(t).sum(0)  # rows without a seed: from their first call
    k = (t.shape[0] - 1 - start).clamp_min(1)
    first = t.gather(0, start.clamp_max(t.shape[0] - 1)[None]).squeeze(0)
    return (first / t[-1]).clamp_min(1.0).log() / k


# --- L-BFGS on the mean squared residual, and the hybrid ---------------------------------------------
def dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product, float64 on the CPU."""
    return (a.flatten(1).double() * b.flatten(1).double()).sum(1).cpu()


def two_loop(g: Tensor, pairs: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """L-BFGS direction ``-H g`` per sample from the (s, y) pairs (Nocedal & Wright, Alg. 7.4), and which
    samples had a usable pair at all (the others get ``-g``).

    A pair without positive curvature (``s.y <= 0``, or a row that did not move) is skipped for that
    sample, and the initial scaling comes from each sample's newest valid pair. Also decoder inversion's.
    """
    q, alphas = g.double(), []
    sy = [dot(s, y) for s, y in pairs]  # each a device sync: once per pair
    rhos = [torch.where(c > 0, 1 / c.clamp_min(1e-300), 0.0) for c in sy]
    for (s, y), rho in zip(reversed(pairs), reversed(rhos)):
        a = rho * dot(s, q)
        q = q - per_row(a, q) * y.double()
        alphas.append(a)
    gamma, found = torch.ones(len(g), dtype=torch.float64), torch.zeros(len(g), dtype=torch.bool)
    for (s, y), c, rho in zip(reversed(pairs), reversed(sy), reversed(rhos)):
        newest = (rho > 0) & ~found
        gamma = torch.where(newest, c / dot(y, y).clamp_min(1e-300), gamma)
        found |= newest
    q = q * per_row(gamma, q)
    for (s, y), rho, a in zip(pairs, rhos, reversed(alphas)):
        q = q + per_row(a - rho * dot(y, q), q) * s.double()
    return -q.to(g.dtype), found


def _armijo(evaluate, mon, idx, xa, fa, ga, d, backtrack: int):
    """Per-sample Armijo backtracking along ``d`` (step quartered, ``backtrack`` times; the last try takes
    any decrease). Returns the steps, the rows that found none, and the accepted values and gradients."""
    slope = dot(ga, d)
    step = torch.ones(len(idx), dtype=torch.float64)
    pending = torch.arange(len(idx))
    fn, gn = fa.clone(), ga.clone()
    for attempt in range(backtrack + 1):
        sub = idx[pending]
        xt = xa[pending] + per_row(step[pending], xa) * d[pending]
        ft, gt = evaluate(xt, sub)
        mon.record(sub, xt, ft)
        ok = ft < fa[pending] if attempt == backtrack else ft <= fa[pending] + 1e-4 * step[pending] * slope[pending]
        fn[pending[ok]], gn[pending[ok]] = ft[ok], gt[ok]
        pending = pending[~ok]
        mon.close()
        if len(pending) == 0 or attempt == backtrack:
            break
        step[pending] *= 0.25
    return step, pending, fn, gn


def solve_lbfgs(problem: StepProblem, x_init: Tensor, *, eta, rtol: float = 0.0, max_iters: int = 100,
                patience: int = 10, history: int = 20, backtrack: int = 6):
    """L-BFGS on ``f(x) = mean r(x)^2`` per sample, Armijo backtracking; ``max_iters`` counts evaluations.

    The first step is the Polyak step ``f / |g|^2 g`` (it would zero a linear residual).
    """
    vdtype = torch.float64 if x_init.dtype == torch.float64 else torch.float32
    n = x_init.shape[0]
    mon = Monitor(x_init.to(vdtype), eta, rtol, max_iters, patience)

    def evaluate(x, idx):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            r, _ = problem.residual(x, idx)
            f = r.flatten(1).pow(2).mean(1)
            g, = torch.autograd.grad(f.sum(), x)
        return f.detach().double().cpu(), g.detach()

    x = mon.best.clone()
    idx = mon.idx()
    f, g = torch.zeros(n, dtype=torch.float64), torch.zeros_like(x)
    f[idx], g[idx] = evaluate(x[idx], idx)
    mon.record(idx, x[idx], f[idx])
    mon.close()
    pairs: list[tuple[Tensor, Tensor]] = []  # full-batch (s, y); rows of finished samples are never read
    while mon.active.any():
        idx = mon.idx()
        xa, fa, ga = x[idx], f[idx], g[idx]
        if pairs:
            d, _ = two_loop(ga, [(s[idx], y[idx]) for s, y in pairs])
            d = torch.where(per_row(dot(ga, d) < 0, d) > 0, d, -ga)  # not a descent direction
        else:
            d = -ga * per_row(fa / dot(ga, ga).clamp_min(1e-300), ga)
        step, pending, fn, gn = _armijo(evaluate, mon, idx, xa, fa, ga, d, backtrack)
        moved = torch.ones(len(idx), dtype=torch.bool)
        moved[pending] = False
        s_new, y_new = torch.zeros_like(x), torch.zeros_like(x)
        s_new[idx] = per_row(step * moved, d) * d
        y_new[idx] = (gn - ga) * per_row(moved, ga)
        x[idx], f[idx], g[idx] = xa + s_new[idx], fn, gn
        good = dot(s_new[idx], y_new[idx]) > 1e-12 * dot(s_new[idx], s_new[idx]).sqrt() * dot(y_new[idx], y_new[idx]).sqrt()
        if bool(good.any()):
            pairs = (pairs + [(s_new, y_new)])[-history:]
        mon.active[idx[~moved]] = False  # no descent even on a tiny step: at the floor of float precision
        mon.close()
    return mon.best, mon.info()


def solve_hybrid(problem: StepProblem, x_init: Tensor, *, eta, rtol: float = 0.0, max_iters: int = 200,
                 patience: int = 3, krylov: int = 8, forcing: float = 1e-3, jvp: str = "fd", switch: float = 4.0,
                 window: int = 3, newton_switch: float = 2.0, newton_iters: int = 10, depth: int = 5,
                 history: int = 20, seed: tuple | None = None, last: float = 0.0):
    """Anderson for ``max_iters`` calls; where it slows (less than ``switch``-fold in ``window`` calls) and the probe
    costs at most a tenth of the budget, one Newton-GMRES iteration as a probe. Where the probe cut the residual
    ``switch``-fold, and more per call than Anderson's last ``window`` calls, Newton goes on while it cuts it
    ``newton_switch``-fold per iteration (at most ``newton_iters``), then L-BFGS, within the calls left.

    Why per call: Anderson costs one forward, a Newton iteration 1 + krylov. Newton is exact in one or two
    iterations on the affine oracle; on the trained networks' hardest step its linear model fails, and
    Anderson keeps gaining 1.2-2x per 10 calls or sits on a plateau for 50-100 calls, then drops 1e6-fold
    (embedded model, 1 step): so it is never stopped for stalling. (Where both stagnate, random networks,
    ``solver="lbfgs"`` keeps descending.)
    """
    eta = torch.as_tensor(eta, dtype=torch.float64).expand(x_init.shape[0])
    newton = dict(rtol=rtol, patience=patience, krylov=krylov, forcing=forcing, jvp=jvp)

    def probe(rows, xb, rate):
        xn, info = solve_newton(problem.rows(rows), xb, eta=eta[rows], max_iters=1, rate=rate, least=switch, **newton)
        return xn, info["residual"], ~info["lost"]

    affordable = max_iters + (seed is not None) >= 10 * (1 + krylov)  # the seed's call counts; it loses on trained nets
    x, info = solve_anderson(problem, x_init, eta=eta, max_iters=max_iters, depth=depth,
                             switch=switch if affordable else 0.0, window=window, seed=seed, probe=probe, last=last)
    x = x.clone()

    def then(stage, rows, **opts):
        rows = rows[info["residual"][rows] > eta[rows]]
        if rtol > 0:
            rows = rows[info["residual"][rows] > rtol * info["initial"][rows]]
        if len(rows) == 0 or opts["max_iters"] <= 0:
            return rows[:0]
        xs, more = stage(problem.rows(rows), x[rows], eta=eta[rows], **opts)
        better = more["residual"] < info["residual"][rows]
        x[rows[better]] = xs[better].to(x.dtype)
        info["residual"][rows[better]] = more["residual"][better]
        info["iters"][rows] += more["iters"]
        return rows

    handed = info["handed"].nonzero().squeeze(1)
    calls = info["iters"] + (1 + krylov)  # per row: Anderson's calls and the probe's
    left = max_iters - int(calls[handed].min()) if len(handed) else 0
    before = info["iters"].clone()
    went_on = then(solve_newton, handed, max_iters=min(newton_iters - 1, left // (1 + krylov)),
                   switch=newton_switch, **newton)
    calls += (1 + krylov) * (info["iters"] - before)
    left = max_iters - int(calls[went_on].min()) if len(went_on) else 0
    then(solve_lbfgs, went_on, rtol=rtol, max_iters=left, history=history)  # the calls still left
    return x, info
