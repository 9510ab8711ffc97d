"""Deterministic step maps and their algebraic inverses.

Every model family writes its noisy state as ``x = alpha * x0 + sigma * eps``
(variance preserving: ``alpha = sqrt(a_t)``, ``sigma = sqrt(1 - a_t)``; flow
matching: ``alpha = 1 - s``, ``sigma = s``). Given the raw network output the
predicted ``x0`` and ``eps`` are linear in ``x``, so one DDIM step
``x_prev = alpha_p * x0 + sigma_p * eps`` is ``x_prev = A x + B out``. The same
two numbers give DDIM (eps and v prediction) and the flow Euler step, and the
exact inverse of the step when the output is known: ``x = (x_prev - B out) / A``.
DDPM adds ``sigma_n * z`` with an explicit noise map ``z``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from inversa.core.errors import InversaError

PREDICTIONS = ("epsilon", "v_prediction", "flow")


def to_x0_eps(prediction: str, alpha: float, sigma: float):
    """Coefficients (c1, c2, c3, c4) with ``x0 = c1 x + c2 out`` and ``eps = c3 x + c4 out``."""
    if prediction == "epsilon":
        return 1.0 / alpha, -sigma / alpha, 0.0, 1.0
    if prediction == "v_prediction":  # v = alpha eps - sigma x0, alpha^2 + sigma^2 = 1
        return alpha, -sigma, sigma, alpha
    if prediction == "flow":  # v = eps - x0, alpha + sigma = 1
        return 1.0, -sigma, 1.0, alpha
    raise InversaError(f"unknown prediction type {prediction!r}; expected one of {PREDICTIONS}")


def split(prediction: str, x: Tensor, out: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
    """(x0, eps) predicted from the raw network output ``out`` at ``x``."""
    c1, c2, c3, c4 = to_x0_eps(prediction, alpha, sigma)
    return c1 * x + c2 * out, c3 * x + c4 * out


def coefficients(prediction: str, alpha: float, sigma: float, alpha_p: float, sigma_p: float,
                 noise: float = 0.0) -> tuple[float, float]:
    """(A, B) of the step ``x_prev = A x + B out (+ noise * z)``.

    ``noise`` is the standard deviation of the fresh noise (0 for DDIM / Euler);
    the predicted eps then keeps only ``sqrt(sigma_p^2 - noise^2)`` of it.
    """
    c1, c2, c3, c4 = to_x0_eps(prediction, alpha, sigma)
    keep = math.sqrt(max(sigma_p**2 - noise**2, 0.0))
    return alpha_p * c1 + keep * c3, alpha_p * c2 + keep * c4


def step(prediction: str, x: Tensor, out: Tensor, alpha, sigma, alpha_p, sigma_p,
         noise: float = 0.0, z: Tensor | None = None) -> Tensor:
    """One deterministic (DDIM / flow Euler) or DDPM step from level (alpha, sigma) to (alpha_p, sigma_p)."""
    a, b = coefficients(prediction, alpha, sigma, alpha_p, sigma_p, noise)
    x_prev = a * x + b * out
    return x_prev if z is None or noise == 0.0 else x_prev + noise * z


def invert_step(prediction: str, x_prev: Tensor, out: Tensor, alpha, sigma, alpha_p, sigma_p,
                noise: float = 0.0, z: Tensor | None = None) -> Tensor:
    """Exact inverse of :func:`step` when the network output at ``x`` is known."""
    a, b = coefficients(prediction, alpha, sigma, alpha_p, sigma_p, noise)
    if z is not None and noise != 0.0:
        x_prev = x_prev - noise * z
    return (x_prev - b * out) / a


def renoise(prediction: str, x_from: Tensor, out: Tensor, alpha_from, sigma_from, alpha_to, sigma_to) -> Tensor:
    """Move ``x_from`` to another noise level with the prediction made there (naive DDIM inversion)."""
    x0, eps = split(prediction, x_from, out, alpha_from, sigma_from)
    return alpha_to * x0 + sigma_to * eps


def ddpm_noise(alpha: float, sigma: float, alpha_p: float, sigma_p: float, eta: float = 1.0) -> float:
    """Std of the fresh noise of a DDPM (eta = 1) or DDIM-eta step between two VP levels."""
    a_t, a_p = alpha**2, alpha_p**2
    if sigma == 0.0 or a_p == 0.0:
        return 0.0
    return eta * math.sqrt(max((sigma_p**2 / sigma**2) * (1.0 - a_t / a_p), 0.0))


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between two noises (per sample)."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]
    sin = torch.sin(theta)
    lin = sin.abs() < 1e-6
    wa = torch.where(lin, torch.full_like(theta, 1 - t), torch.sin((1 - t) * theta) / sin.where(~lin, torch.ones_like(sin)))
    wb = torch.where(lin, torch.full_like(theta, t), torch.sin(t * theta) / sin.where(~lin, torch.ones_like(sin)))
    return (wa * af + wb * bf).view_as(a)
