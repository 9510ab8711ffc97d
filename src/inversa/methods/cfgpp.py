"""CFG++ (Chung et al., ICLR 2025): guidance inside the manifold, lambda in [0, 1].

Sampling denoises with the guided output and renoises with the unconditional one:
``x0 = x0(eps_l)``, ``x_prev = alpha_p x0 + sigma_p eps_u``, ``eps_l = eps_u + lam (eps_c - eps_u)``.
Inversion swaps the roles (the naive inverse of that step, outputs taken one level early):
``x0 = (x_prev - sigma_p eps_u) / alpha_p``, ``x = alpha x0 + sigma eps_l``. Written with
:func:`inversa.core.samplers.to_x0_eps`, the step is ``x_prev = A x + B_l out_l + B_u out_u`` for eps,
v and flow models alike. The unconditional branch is the empty prompt (the paper's null text) in
inversion, reconstruction and editing; ``lam`` is kept in the inversion's config and replaces the
sampling guidance, so the plain x_T needs this sampler (:func:`sample`).

| code | paper |
|---|---|
| ``lam`` | lambda, the CFG++ guidance scale in [0, 1] |
| ``out_l`` / ``out_u`` | eps^lambda_c / eps_null |
"""
from __future__ import annotations

import torch

from inversa.core import samplers
from inversa.core.errors import InversaError
from inversa.core.types import Condition
from inversa.methods import Recorder, StockHook, register

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


class CapturedScale:
    """CFG++'s ``lam`` as a stock pipeline's guidance scale, keeping the direction ``c - u`` it scales.

    Pipelines run both branches only while ``guidance_scale > 1``, so it compares above anything.
    The pipeline then steps with the guided output; CFG++ renoises with the unconditional one
    instead, which the step-end hook adds back: ``x_prev += B_u (u - out_l)``.
    """

    direction = None

    def __init__(self, w: float):
        self.w = w

    def __gt__(self, other) -> bool:
        return True

    def __mul__(self, other):
        self.direction = other
        return self.w * other

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"CapturedScale({self.w})"


def stock_replay(model, inv) -> StockHook:
    """lam as the guidance scale, and each step's renoising with the unconditional output."""
    if model.stock_without_cfg:
        raise InversaError(f"a stock {model.stock_label} pipeline cannot replay a cfgpp inversion: "
                           f"{model.stock_without_cfg}; use inversa.reconstruct")
    scale = CapturedScale(float(inv.config.get("lam", LAM)))

    def step_end(i: int, latents):
        levels = inv.alphas[i], inv.sigmas[i], inv.alphas[i + 1], inv.sigmas[i + 1]
        b_u = coefficients(model.prediction, *levels)[2]
        return latents - b_u * scale.w * scale.direction.to(latents)

    return StockHook({"guidance_scale": scale}, step_end)


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


@register("cfgpp", sample=sample, cost="2 NFE per step", stock=stock_replay)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, lam: float = LAM, keep_trajectory: bool = True):
    """Naive inversion of the CFG++ step: renoise with the lam-guided output, denoise with the unconditional."""
    check_lam(lam)
    if condition.guided:
        raise InversaError("cfgpp guides with lam in [0, 1] (--opt lam=...); leave guidance at 1")
    condition = null_condition(model, condition.cond)
    x, rec = z0, Recorder(model, z0)
    for i in rec.schedule(schedule, "cfgpp"):
        A, B_l, B_u = coefficients(model.prediction, *schedule.levels(i))
        out_l, out_u = outputs(model, x, float(schedule.timesteps[i]), condition, lam)
        x = (x - B_l * out_l - B_u * out_u) / A
        rec.record(x)
    return rec.trace(x, {}, keep_trajectory)
