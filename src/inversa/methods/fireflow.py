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

from inversa.core import flow
from inversa.methods import register


def _steps(model, condition):
    v = flow.velocity(model, condition, "fireflow")
    return lambda i, x, s, s_next, reused: flow.midpoint_step(v, x, s, s_next, reused)


sample, invert = flow.solver_method(
    "fireflow", _steps, "Midpoint flow steps reusing the previous midpoint velocity (FireFlow); replayed by the same solver.")
register("fireflow", sample=sample, cost="1 NFE per step (+1), sampling too", flow_only=True)(invert)
