"""Prompt Tuning Inversion (Dong et al., ICCV 2023): the conditional embedding of every step, tuned.

The pivot is naive DDIM inversion at guidance 0 (the unconditional prompt alone). Sampling
from its x_T with guidance ``w`` drifts off it; at each step Adam adjusts the conditional
embedding ``c_t``, starting from the previous step's ``c_{t+1}`` (the source prompt's for the
first), so that the guided step lands on the next pivot state: the Null-text family's mirror.
The embeddings are kept in ``state["cond_hidden"]`` (N, B, L, D) and replayed by :func:`sample`:
rows sampled with the inverted prompt use ``c_t``, rows with another (target) prompt
``beta c_target + (1 - beta) c_t``.

| code | paper |
|---|---|
| ``cond_hidden[i]`` | c_t, the tuned conditional embedding of step t |
| ``beta`` | beta, the interpolation weight of the target embedding in editing |
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.core.types import Condition, Embeds
from inversa.methods import Recorder, StateKey, register
from inversa.methods.ddim import naive_inversion
from inversa.methods.null_text import tune_embedding

BETA = 0.7


def check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise InversaError(f"prompt_tuning beta must be in [0, 1], got {beta}")


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """Guided sampling with the tuned ``c_t`` (inverted prompt) or its mix with the target prompt."""
    tuned = inv.state["cond_hidden"]  # as many steps as the schedule: checked from the registration
    n, beta = inv.x_T.shape[0], float(inv.config.get("beta", BETA))
    cond = condition.cond.expand(n)
    inverted = model.encode_prompt(list(inv.prompts)).expand(n).hidden.to(cond.hidden)
    replay = torch.isclose(cond.hidden, inverted, rtol=1e-4, atol=1e-5).flatten(1).all(1)
    replay = replay.view(-1, *([1] * (cond.hidden.ndim - 1)))
    x = inv.x_T
    for i in range(len(schedule)):
        c_t = tuned[i].to(cond.hidden)
        hidden = torch.where(replay, c_t, beta * cond.hidden + (1 - beta) * c_t)
        step_condition = Condition(Embeds(hidden, cond.pooled), condition.uncond, condition.guidance)
        out = model.predict(x, float(schedule.timesteps[i]), step_condition)
        x = samplers.step(model.prediction, x, out, *schedule.levels(i))
    return x


@register("prompt_tuning", sample=sample,
          cost="2 NFE + K x (fwd+bwd) per step, +1 NFE without early stop (K = iters, stop on tol)",
          guided=True, state={"cond_hidden": StateKey(per_step="prompt embeddings")})
def invert(model, z0, condition, schedule, *, iters: int = 10, lr: float = 1e-2, tol: float = 1e-5,
           beta: float = BETA, keep_trajectory: bool = True):
    """Per-step conditional embedding tuned so guided sampling follows the guidance-0 DDIM pivot."""
    check_beta(beta)
    if condition.uncond is None:
        raise InversaError("prompt_tuning tunes the conditional embedding under guidance: invert with guidance != 1")
    n, w = z0.shape[0], condition.guidance
    pivots, pivot_steps = naive_inversion(model, z0, condition, schedule, guidance=0.0, desc="prompt_tuning pivot")
    cond = condition.cond.expand(n)
    hidden, pooled = cond.hidden.detach().clone(), cond.pooled
    uncond = condition.uncond.expand(n)
    x, tuned, rec = pivots[0], [], Recorder(model, pivots[0], inverse=False)
    for i in rec.schedule(schedule, "prompt_tuning"):
        t = float(schedule.timesteps[i])
        A, B = samplers.coefficients(model.prediction, *schedule.levels(i))
        with torch.no_grad():
            u = model.forward(x, t, uncond)
        hidden, out, info = tune_embedding(model, x, t, Embeds(hidden, pooled), lambda c: u + w * (c - u),
                                           pivots[i + 1], A, B, iters=iters, lr=lr, tol=tol)
        x = (A * x + B * out).detach()
        tuned.append(hidden)
        rec.record(x, nfe=pivot_steps[i]["nfe"], **info)
    return rec.trace(pivots[0], {"cond_hidden": torch.stack(tuned)}, keep_trajectory)
