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

from inversa.core import flow
from inversa.methods import register


def _steps(model, condition):
    v = flow.velocity(model, condition, "rf_solver")
    return lambda i, x, s, s_next, carry: (flow.rf_solver_step(v, x, s, s_next), None)


sample, invert = flow.solver_method(
    "rf_solver", _steps, "Second-order (midpoint / Taylor) flow steps towards the noise; replayed by the same solver (RF-Solver).")
register("rf_solver", sample=sample, cost="2 NFE per step (sampling too)", flow_only=True)(invert)
