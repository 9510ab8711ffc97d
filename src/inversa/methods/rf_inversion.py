"""RF-Inversion (Rout et al. 2024, "Semantic Image Inversion and Editing using Rectified SDEs").

Inversion follows a controlled ODE: the model's velocity is pulled, with strength ``gamma``,
towards the straight path to a fixed noise sample ``y1``, which makes ``x_T`` more like
noise (editable) at the cost of exactness. Sampling may pull back towards the image latent
``y0`` with strength ``eta`` for the steps in ``[start, stop)`` (fractions of the sampling
steps from the noisy end): ``eta = 0`` is the stock Euler sampler, ``eta > 0`` the paper's
controlled editing.

| code | paper |
|---|---|
| ``gamma``, ``eta`` | controller guidance ``gamma``, ``eta`` |
| ``y1``, ``y0`` (= ``z0``) | the noise target ``y_1``, the reference image ``y_0`` |
| ``(y1 - x) / (1 - s)`` | conditional field ``u_t(Y_t | y_1)`` |
| ``(x - y0) / s`` | conditional field ``u_t(X_t | y_0)`` (in levels ``s = 1 - t``) |
| ``start``, ``stop`` | starting time ``s`` and stopping time ``tau``, as step fractions |
"""
from __future__ import annotations

import torch

from inversa.core import flow
from inversa.core.errors import InversaError
from inversa.methods import Trace, register

DEFAULTS = {"gamma": 0.5, "eta": 0.0, "start": 0.0, "stop": 0.25}  # the sampler reads what the inversion was given

def controlled_step(v, x, s, s_next, target, strength):
    """An Euler step of ``v + strength (u - v)``, ``u`` the straight path from ``x`` to ``target`` at level 1 or 0."""
    h, v_x = s_next - s, v(x, s)
    if strength == 0.0:
        return x + h * v_x
    u = (target - x) / (1 - s) if s_next > s else (x - target) / s
    return x + h * (v_x + strength * (u - v_x))


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """Euler sampling pulled towards the image latent with ``eta`` for the steps in ``[start, stop)``."""
    v, n = flow.velocity(model, condition, "rf_inversion"), len(schedule)
    eta, start, stop = (float({**DEFAULTS, **inv.config}[k]) for k in ("eta", "start", "stop"))
    y0 = inv.z0.to(inv.x_T)
    if eta and y0.shape != inv.x_T.shape:
        raise InversaError("rf_inversion's controlled sampler (eta > 0) needs the image latent of every sample "
                           "(interpolated frames have none); sample them with eta=0")

    def step(i, x, s, s_next, carry):
        return controlled_step(v, x, s, s_next, y0, eta if start <= i / n < stop else 0.0), None

    return flow.integrate(model, inv.x_T, schedule, step, inverse=False, desc="rf_inversion")[0]


@register("rf_inversion", sample=sample, cost="1 NFE per step; Euler sampling controlled by eta", flow_only=True)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, gamma: float = DEFAULTS["gamma"], eta: float = DEFAULTS["eta"],
           start: float = DEFAULTS["start"], stop: float = DEFAULTS["stop"], seed: int = 0, keep_trajectory: bool = True):
    """Controlled ODE towards a fixed noise sample with strength gamma; controlled sampling with eta (RF-Inversion)."""
    for name, value in (("gamma", gamma), ("eta", eta), ("start", start), ("stop", stop)):
        if not 0.0 <= value <= 1.0:
            raise InversaError(f"rf_inversion {name} must be in [0, 1], got {value}")
    v = flow.velocity(model, condition, "rf_inversion")
    gen = torch.Generator().manual_seed(seed)
    y1 = torch.randn(z0.shape, generator=gen, dtype=z0.dtype).to(z0.device)
    x, states, steps = flow.integrate(model, z0, schedule,
                                      lambda i, x, s, s_next, carry: (controlled_step(v, x, s, s_next, y1, gamma), None),
                                      inverse=True, desc="rf_inversion")
    return Trace(x, states if keep_trajectory else None, {}, steps)
