"""Flow-matching steps that run in either direction, and the loop the flow methods share.

A flow model's state is ``x_s = (1 - s) z0 + s eps`` and its network predicts the velocity
``v = dx/ds``. A step from level ``s`` to ``s_next`` is the same formula whether it samples
(``s_next < s``) or inverts (``s_next > s``): inversion only swaps the levels, as k-diffusion
runs its solvers in reverse. Multistep state (FireFlow's reused velocity) is the loop's
``carry``; :func:`integrate` records the trajectory, NFE and time of every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.trace import Recorder, Trace
from inversa.core.types import Condition, Predictor, Schedule


def require_flow(model: Predictor, method: str) -> None:
    """Flow methods need a velocity network; say so in one line for any other model."""
    if model.prediction != "flow":
        raise InversaError(f"{method} needs a flow-matching model (velocity prediction: SD3, FLUX); "
                           f"{model.name} predicts {model.prediction}")


@dataclass(frozen=True)
class Velocity:
    """``v(x, s)``: the guided network of ``model`` at level ``s`` (network time ``s * scale``).

    ``guidance`` overrides the condition's scale (a float, or one per sample as in FlowEdit).
    """

    model: Predictor
    condition: Condition
    scale: float
    guidance: float | Tensor | None = None

    def __call__(self, x: Tensor, s: float) -> Tensor:
        return self.model.predict(x, s * self.scale, self.condition, self.guidance)


def velocity(model: Predictor, condition: Condition, method: str, guidance: float | Tensor | None = None) -> Velocity:
    """The velocity field of a flow model; the time scale comes from the model's own schedule."""
    require_flow(model, method)
    return Velocity(model, condition, 1.0 / float(model.schedule_from_timesteps([1.0]).sigmas[0]), guidance)


def euler_step(v: Velocity, x: Tensor, s: float, s_next: float) -> Tensor:
    """``x + h v(x, s)``: the stock sampler's step (and naive inversion when ``s_next > s``)."""
    return x + (s_next - s) * v(x, s)


def midpoint_step(v: Velocity, x: Tensor, s: float, s_next: float, v_start: Tensor | None = None):
    """``(x + h v_mid, v_mid)`` with ``v_mid = v(x + h/2 v_start, s + h/2)``; ``v_start`` defaults to ``v(x, s)``."""
    h = s_next - s
    v_start = v(x, s) if v_start is None else v_start
    v_mid = v(x + h / 2 * v_start, s + h / 2)
    return x + h * v_mid, v_mid


def rf_solver_step(v: Velocity, x: Tensor, s: float, s_next: float) -> Tensor:
    """RF-Solver's second-order Taylor step ``x + h v + h^2/2 v'`` with ``v' = (v_mid - v) / (h/2)``.

    Written out it is ``x + h v_mid``: the midpoint step (2 NFE).
    """
    return midpoint_step(v, x, s, s_next)[0]


Step = Callable[[int, Tensor, float, float, object], tuple[Tensor, object]]


def integrate(model: Predictor, x: Tensor, schedule: Schedule, step: Step, *, inverse: bool, desc: str = "flow"):
    """Run ``step(i, x, s, s_next, carry) -> (x, carry)`` over every step of ``schedule``.

    ``inverse`` walks from the clean level up to the noise (step ``i`` goes from level
    ``i + 1`` to ``i``), otherwise down from the noise. Returns ``(x, states, steps)``:
    the end state, the states noisiest first and per-step diagnostics (NFE per sample,
    seconds), both in schedule order.
    """
    sig, carry, rec = schedule.sigmas.tolist(), None, Recorder(model, x, inverse=inverse)
    for i in rec.schedule(schedule, desc):
        s, s_next = (sig[i + 1], sig[i]) if inverse else (sig[i], sig[i + 1])
        x, carry = step(i, x, s, s_next, carry)
        rec.record(x)
    return x, rec.states, rec.steps


def solver_method(name: str, steps: Callable, summary: str) -> tuple[Callable, Callable]:
    """(sample, invert) of a flow method whose inversion and sampling run one solver both ways.

    ``steps(model, condition)`` gives the ``integrate`` step; ``summary`` is the method's docstring.
    """

    @torch.no_grad()
    def sample(model, inv, schedule, condition):
        return integrate(model, inv.x_T, schedule, steps(model, condition), inverse=False, desc=name)[0]

    @torch.no_grad()
    def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
        x, states, info = integrate(model, z0, schedule, steps(model, condition), inverse=True, desc=name)
        return Trace(x, states if keep_trajectory else None, {}, info)

    sample.__doc__, invert.__doc__ = f"{name} sampling from ``x_T`` with the inversion's solver.", summary
    return sample, invert
