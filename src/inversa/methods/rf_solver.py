"""RF-Solver (Wang et al. 2024, "Taming Rectified Flow for Inversion and Editing"): a second-order step.

The velocity's derivative along the path is estimated from one extra evaluation at the
half step, and the same step both inverts (levels upwards) and samples (downwards), so
the two directions share their O(h^3) local error instead of Euler's O(h^2).

| code | paper |
|---|---|
| ``s``, ``s_next``, ``h = s_next - s`` | ``t_i``, ``t_{i-1}``, ``t_{i-1} - t_i`` |
| ``v(x, s)`` | ``v_theta(Z_{t_i}, t_i)`` |
| ``(v_mid - v) / (h/2)`` | ``v^(1)_theta``, the first-order derivative |
"""
from __future__ import annotations

import torch

from .. import flow
from . import Trace, register


def _steps(model, condition):
    v = flow.velocity(model, condition, "rf_solver")
    return lambda i, x, s, s_next, carry: (flow.rf_solver_step(v, x, s, s_next), None)


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """RF-Solver sampling from ``x_T`` (2 NFE per step)."""
    return flow.integrate(model, inv.x_T, schedule, _steps(model, condition), inverse=False, desc="rf_solver")[0]


@register("rf_solver", sample=sample, cost="2 NFE per step (sampling too)", flow_only=True)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """Second-order (midpoint / Taylor) flow steps towards the noise; replayed by the same solver (RF-Solver)."""
    x, states, steps = flow.integrate(model, z0, schedule, _steps(model, condition), inverse=True, desc="rf_solver")
    return Trace(x, states if keep_trajectory else None, {}, steps)
