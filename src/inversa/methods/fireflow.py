"""FireFlow (Deng et al. 2024, "Fast Inversion of Rectified Flow for Image Semantic Editing").

A midpoint step whose starting velocity is the previous step's midpoint velocity, reused:
second order at about one network evaluation per step (N + 1 for N steps). The reused
velocity is the loop's carry; inversion and sampling run the same step.

| code | paper |
|---|---|
| ``s``, ``s_next``, ``h = s_next - s`` | ``t_i``, ``t_{i+1}``, ``Delta t`` |
| ``carry`` (previous ``v_mid``) | ``v_theta(X_{t_{i-1} + Delta t/2}, ...)``, the reused velocity |
| ``v_mid`` | ``v_theta(X_{t_i + Delta t/2}, t_i + Delta t/2)`` |
"""
from __future__ import annotations

import torch

from .. import flow
from . import Trace, register


def _steps(model, condition):
    v = flow.velocity(model, condition, "fireflow")
    return lambda i, x, s, s_next, reused: flow.midpoint_step(v, x, s, s_next, reused)


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """FireFlow sampling from ``x_T`` (N + 1 NFE for N steps)."""
    return flow.integrate(model, inv.x_T, schedule, _steps(model, condition), inverse=False, desc="fireflow")[0]


@register("fireflow", sample=sample, cost="1 NFE per step (+1), sampling too", flow_only=True)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """Midpoint flow steps reusing the previous midpoint velocity (FireFlow); replayed by the same solver."""
    x, states, steps = flow.integrate(model, z0, schedule, _steps(model, condition), inverse=True, desc="fireflow")
    return Trace(x, states if keep_trajectory else None, {}, steps)
