"""Uni-Inv (Jiao et al. 2025, "UniEdit-Flow"): 1-NFE predictor-corrector inversion for the stock Euler sampler.

Euler sampling from level ``s_next`` to ``s`` uses ``v(x_next, s_next)``, so its exact
inverse needs the velocity at the unknown next state. Uni-Inv predicts that state with
the last velocity, evaluates the velocity there, corrects the step from the current state
with it and keeps it to predict the next step: one network call per step (two on the
first), and the stock Euler sampler replays the result.

| code | paper |
|---|---|
| ``x``, ``s``, ``s_next``, ``h`` | ``Z_{t_i}``, ``t_i``, ``t_{i+1}``, ``t_{i+1} - t_i`` |
| ``x + h v_prev`` | the predicted ``Z^_{t_{i+1}}`` |
| ``v_next = v(x + h v_prev, s_next)`` | ``v_theta(Z^_{t_{i+1}}, t_{i+1})`` (the corrector's velocity) |
"""
from __future__ import annotations

import torch

from inversa.core import flow
from inversa.methods import Trace, register


def uni_inv_step(v, x, s, s_next, v_prev=None):
    """Predict ``x + h v_prev``, evaluate the velocity there, correct ``x`` with it; returns ``(x_next, v_next)``."""
    h = s_next - s
    v_prev = v(x, s) if v_prev is None else v_prev
    v_next = v(x + h * v_prev, s_next)
    return x + h * v_next, v_next


@register("uni_inv", cost="1 NFE per step (+1); stock Euler sampling", flow_only=True)
@torch.no_grad()
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """Predictor-corrector inversion of the Euler sampler at one network call per step (Uni-Inv)."""
    v = flow.velocity(model, condition, "uni_inv")
    x, states, steps = flow.integrate(model, z0, schedule, lambda i, x, s, s_next, v_prev: uni_inv_step(v, x, s, s_next, v_prev),
                                      inverse=True, desc="uni_inv")
    return Trace(x, states if keep_trajectory else None, {}, steps)
