"""Null-text inversion (Mokady et al. 2023): optimise the unconditional embedding of every step.

The pivot is the naive DDIM inversion with the source prompt at guidance 1. Sampling
with guidance ``w`` then drifts off it; at each step, Adam adjusts the unconditional
(null) embedding so that the guided step lands on the next pivot state. The per-step
embeddings are kept in ``state["uncond_hidden"]`` (N, B, L, D), which
:func:`inversa.core.replay.denoise` replays, so the plain sampler reconstructs.
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.methods import Recorder, StateKey, register
from inversa.methods.ddim import naive_inversion


def tune_embedding(model, x, t: float, start: Embeds, guided, target, A, B, *, iters: int, lr: float, tol: float):
    """Adam on one step's prompt embedding so that ``A x + B guided(out(embedding))`` lands on ``target``.

    ``guided`` combines the tuned branch's output with the fixed one. Returns the embedding's
    token states, the guided output they give and ``{"iters", "residual"}`` (one more evaluation
    follows when the loop ran out before ``tol``).
    """
    var = start.hidden.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr)
    used, loss, done = 0, torch.zeros(x.shape[0]), None
    for _ in range(iters):
        with torch.enable_grad():
            out = guided(model.forward(x, t, Embeds(var, start.pooled)))
            loss = (A * x + B * out - target).flatten(1).pow(2).mean(1)
        used += 1
        if float(loss.detach().max()) < tol:
            done = out.detach()  # the output of the embedding we keep: no re-evaluation
            break
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    hidden, out = var.detach(), done
    if out is None:
        with torch.no_grad():
            out = guided(model.forward(x, t, Embeds(hidden, start.pooled)))
    return hidden, out, {"iters": used, "residual": loss.detach().double().tolist()}


@register("null_text", cost="2 NFE + K x (fwd+bwd) per step, +1 NFE without early stop (K = iters, stop on tol)",
          guided=True, state={"uncond_hidden": StateKey(per_step="null embeddings")})
def invert(model, z0, condition, schedule, *, iters: int = 10, lr: float = 1e-2, tol: float = 1e-5,
           keep_trajectory: bool = True):
    """Per-step optimised unconditional embedding that makes guided sampling follow the DDIM pivot."""
    if condition.uncond is None:
        raise InversaError("null_text optimises the unconditional embedding: invert with guidance != 1")
    n, w = z0.shape[0], condition.guidance
    pivots, pivot_steps = naive_inversion(model, z0, condition, schedule, guidance=1.0, desc="null_text pivot")
    uncond = condition.uncond.expand(n)
    null, pooled = uncond.hidden.detach().clone(), uncond.pooled
    cond = condition.cond.expand(n)
    x, nulls, rec = pivots[0], [], Recorder(model, pivots[0], inverse=False)
    for i in rec.schedule(schedule, "null_text"):
        t, levels = float(schedule.timesteps[i]), schedule.levels(i)
        A, B = samplers.coefficients(model.prediction, *levels)
        with torch.no_grad():
            c = model.forward(x, t, cond)
        null, out, info = tune_embedding(model, x, t, Embeds(null, pooled), lambda u: u + w * (c - u), pivots[i + 1],
                                         A, B, iters=iters, lr=lr, tol=tol)
        x = (A * x + B * out).detach()
        nulls.append(null)
        rec.record(x, nfe=pivot_steps[i]["nfe"], **info)
    return rec.trace(pivots[0], {"uncond_hidden": torch.stack(nulls)}, keep_trajectory)
