"""CFG++ (Chung et al., ICLR 2025): guidance inside the manifold, lambda in [0, 1].

Sampling denoises with the guided output and renoises with the unconditional one:
``x0 = x0(eps_l)``, ``x_prev = alpha_p x0 + sigma_p eps_u``, ``eps_l = eps_u + lam (eps_c - eps_u)``.
Inversion swaps the roles (the naive inverse of that step, outputs taken one level early):
``x0 = (x_prev - sigma_p eps_u) / alpha_p``, ``x = alpha x0 + sigma eps_l``. Written with
:func:`inversa.samplers.to_x0_eps`, the step is ``x_prev = A x + B_l out_l + B_u out_u`` for eps,
v and flow models alike. The unconditional branch is the empty prompt (the paper's null text) in
inversion, reconstruction and editing; ``lam`` is kept in the inversion's config and replaces the
sampling guidance, so the plain x_T needs this sampler (:func:`sample`).

| code | paper |
|---|---|
| ``lam`` | lambda, the CFG++ guidance scale in [0, 1] |
| ``out_l`` / ``out_u`` | eps^lambda_c / eps_null |
"""
from __future__ import annotations

import time

import torch

from .. import samplers
from ..errors import InversaError
from ..model import Condition
from . import Trace, backwards, register, step_info

LAM = 0.6  # default lambda; the paper sweeps it over [0, 1]


def coefficients(prediction: str, alpha, sigma, alpha_p, sigma_p) -> tuple[float, float, float]:
    """(A, B_l, B_u) of the CFG++ step ``x_prev = A x + B_l out_l + B_u out_u``."""
    c1, c2, c3, c4 = samplers.to_x0_eps(prediction, alpha, sigma)
    return alpha_p * c1 + sigma_p * c3, alpha_p * c2, sigma_p * c4


def outputs(model, x, t: float, condition: Condition, lam: float):
    """(out_l, out_u): the lambda-guided and the unconditional network outputs, in one batched call."""
    u, c = model.predict_parts(x, t, condition)
    return u + lam * (c - u), u


def null_condition(model, cond) -> Condition:
    """The prompts with the empty prompt as unconditional branch (CFG++ always guides against null text)."""
    return Condition(cond, model.encode_negative([""] * len(cond)), 1.0)


def check_lam(lam: float) -> None:
    if not 0.0 <= lam <= 1.0:
        raise InversaError(f"cfgpp lam must be in [0, 1] (CFG++ guidance), got {lam}")


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """The CFG++ sampler from ``x_T``: denoise with the guided output, renoise with the unconditional one."""
    lam = float(inv.config.get("lam", LAM))
    condition = null_condition(model, condition.cond)
    x = inv.x_T
    for i in range(len(schedule)):
        A, B_l, B_u = coefficients(model.prediction, *schedule.levels(i))
        out_l, out_u = outputs(model, x, float(schedule.timesteps[i]), condition, lam)
        x = A * x + B_l * out_l + B_u * out_u
    return x



@register("cfgpp", sample=sample, cost="2 NFE per step")
@torch.no_grad()
def invert(model, z0, condition, schedule, *, lam: float = LAM, keep_trajectory: bool = True):
    """Naive inversion of the CFG++ step: renoise with the lam-guided output, denoise with the unconditional."""
    check_lam(lam)
    if condition.guided:
        raise InversaError("cfgpp guides with lam in [0, 1] (--opt lam=...); leave guidance at 1")
    condition = null_condition(model, condition.cond)
    x, states, steps = z0, [z0], []
    for i in backwards(schedule, "cfgpp"):
        start = time.perf_counter()
        A, B_l, B_u = coefficients(model.prediction, *schedule.levels(i))
        out_l, out_u = outputs(model, x, float(schedule.timesteps[i]), condition, lam)
        x = (x - B_l * out_l - B_u * out_u) / A
        states.insert(0, x)
        steps.insert(0, step_info(i, 2, time.perf_counter() - start))
    return Trace(x, states if keep_trajectory else None, {}, steps)
