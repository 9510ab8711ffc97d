"""SPDInv (Li et al., ECCV 2024) and DCI (Li et al., NeurIPS 2025): refine each naive step's z_t.

SPDInv, per step: a naive inverse step with the source prompt and no guidance gives z_t,
then AdamW on z_t itself makes the sampler step from z_t land on z_{t-1} (lr 1e-3, up to 25
evaluations, stop below a mean squared residual of 5e-6). The latent chain is kept in
``state["chain"]`` (N+1, B, ...) for the editing options. DCI runs the same loop (K = 5,
eta = lr = 1e-3) with the noise prediction inside the residual corrected towards a reference
conditioned on the image: the noise relating z_t to the image latent, ``eps_ref = (z_t - alpha z0) / sigma``,
``eps <- eps - lam grad_eps ||eps_ref - eps||``, a move of length ``lam`` towards it (per sample,
never past it). This is our reading of the paper's prompt-and-image "dual condition"; it moves
x_T off the exact fixed point, towards the image's forward-noised chain.

Editing options (used by :func:`sample` when the sampler is guided, i.e. in ``inversa edit``):
``prox`` thresholds the guidance direction ``c - u`` at its ``prox`` quantile per sample
(ProxEdit's l0 proximal step); ``pull`` moves the latent outside the thresholded region that
fraction of the way back to the chain after every step. ``inversa edit --negative SOURCE``
gives the target branch the source prompt as negative (default: the empty prompt).

| code | paper |
|---|---|
| ``iters``, ``lr``, ``tol`` | SPDInv's 25 rounds, AdamW lr 1e-3, 5e-6; DCI's K = 5, eta = 1e-3 |
| ``ref_weight`` | DCI's lambda (2) |
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.core.solvers import StepProblem, solve_paper
from inversa.methods import Recorder, StateKey, Trace, register


@dataclass
class ReferenceStep(StepProblem):
    """A step whose predicted noise moves ``weight`` towards the image's own noise (DCI's correction).

    The reference is the noise that relates ``x`` to the image latent ``z0`` at this level,
    ``(x - alpha z0) / sigma``; the network output changes by the matching amount (v and flow too).
    """

    z0: Tensor | None = None
    weight: float = 0.0

    def output(self, x: Tensor, idx: Tensor) -> Tensor:
        out = super().output(x, idx)
        alpha, sigma = self.levels[0], self.levels[1]
        _, _, c3, c4 = samplers.to_x0_eps(self.model.prediction, alpha, sigma)
        if not self.weight or c4 == 0:  # c4 = 0: pure noise of a flow model, the output sets no noise
            return out
        gap = (x - alpha * self.z0[idx].to(x)) / sigma - (c3 * x + c4 * out)
        norm = gap.flatten(1).norm(dim=1).clamp_min(1e-30)
        return out + (self.weight / norm).clamp(max=1.0).view(-1, *([1] * (out.ndim - 1))) * gap / c4


def check_edit_options(prox: float, pull: float) -> None:
    if not 0.0 <= prox < 1.0:
        raise InversaError(f"prox is a quantile in [0, 1), got {prox}")
    if not 0.0 <= pull <= 1.0:
        raise InversaError(f"pull is a fraction in [0, 1], got {pull}")
    if pull and not prox:
        raise InversaError("pull needs prox > 0: the thresholded guidance marks the edited region")


@torch.no_grad()
def refine(model, z0, condition, schedule, *, iters: int, lr: float, tol: float, ref_weight: float,
           keep_trajectory: bool, desc: str) -> Trace:
    """The SPDInv / DCI loop: naive step, then AdamW on z_t against the step residual.

    The papers invert at guidance 1 (the default, and ``inversa edit``'s); another guidance
    refines the guided step, which reconstruction replays.
    """
    x, rec = z0, Recorder(model, z0)
    for i in rec.schedule(schedule, desc):
        t, levels = float(schedule.timesteps[i]), schedule.levels(i)
        out = model.predict(x, t, condition)
        x_init = samplers.invert_step(model.prediction, x, out, *levels)
        problem = ReferenceStep(model, t, condition, levels, x, z0=z0, weight=ref_weight)
        x_i, info = solve_paper(problem, x_init, z0, 0.0, 1.0, lr=lr, eta=tol, max_iters=iters)  # x = 0 z0 + 1 z_t
        x = x_i.to(z0.dtype)
        rec.record(x, iters=info["iters"].tolist(), residual=info["residual"].tolist())
    return rec.trace(x, {"chain": torch.stack(rec.states)}, keep_trajectory)


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """The plain sampler; guided (editing) with ``prox``/``pull``, ProxEdit thresholding and the pull to the chain."""
    from inversa.core.replay import denoise

    prox, pull = float(inv.config.get("prox", 0.0)), float(inv.config.get("pull", 0.0))
    if not condition.guided or not prox:
        return denoise(model, inv.x_T, schedule, condition)
    chain = inv.state["chain"]
    if pull and chain.shape[0] != len(schedule) + 1:
        raise InversaError(f"pull follows the {chain.shape[0] - 1}-step chain; edit with that many steps")
    x = inv.x_T
    for i in range(len(schedule)):
        u, c = model.predict_parts(x, float(schedule.timesteps[i]), condition)
        d = c - u
        level = torch.quantile(d.abs().flatten(1).float(), prox, dim=1).to(d)
        kept = d.abs() > level.view(-1, *([1] * (d.ndim - 1)))
        x = samplers.step(model.prediction, x, u + condition.guidance * d * kept, *schedule.levels(i))
        if pull:
            outside = ~kept.any(1, keepdim=True)
            x = x + pull * outside * (chain[i + 1].to(x) - x)
    return x


CHAIN = {"chain": StateKey()}  # the latent chain (N+1, B, ...), noisiest first


@register("spdinv", sample=sample, state=CHAIN, cost="1 NFE + up to K x (fwd+bwd) per step (K = iters, stop on tol)")
def invert(model, z0, condition, schedule, *, iters: int = 25, lr: float = 1e-3, tol: float = 5e-6,
           prox: float = 0.0, pull: float = 0.0, keep_trajectory: bool = True):
    """Naive step with the source prompt, then AdamW on z_t until its step lands on z_{t-1} (SPDInv)."""
    check_edit_options(prox, pull)
    return refine(model, z0, condition, schedule, iters=iters, lr=lr, tol=tol, ref_weight=0.0,
                  keep_trajectory=keep_trajectory, desc="spdinv")


@register("dci", sample=sample, state=CHAIN, cost="1 NFE + up to K x (fwd+bwd) per step (K = 5)")
def invert_dci(model, z0, condition, schedule, *, iters: int = 5, lr: float = 1e-3, tol: float = 5e-6,
               ref_weight: float = 2.0, prox: float = 0.0, pull: float = 0.0, keep_trajectory: bool = True):
    """SPDInv's loop with the noise prediction moved towards the image's own noise at that level (DCI)."""
    check_edit_options(prox, pull)
    return refine(model, z0, condition, schedule, iters=iters, lr=lr, tol=tol, ref_weight=ref_weight,
                  keep_trajectory=keep_trajectory, desc="dci")
