"""Small pieces shared by the baseline methods (pivot trajectories, step diagnostics)."""
from __future__ import annotations

import torch

from .ddim import naive_step


@torch.no_grad()
def pivot_trajectory(model, z0, condition, schedule) -> list:
    """Naive DDIM inversion with the conditional prompt only (guidance 1): ``[x_0 (= x_T), ..., x_N (= z0)]``.

    Null-text and Direct inversion both follow this trajectory, the one that guidance 1
    would reproduce almost exactly, and then correct the guided sampler towards it.
    """
    x, states = z0, [z0]
    for i in reversed(range(len(schedule))):
        x, _ = naive_step(model, x, float(schedule.timesteps[i]), condition, schedule.levels(i), guidance=1.0)
        states.insert(0, x)
    return states


def step_info(i: int, nfe: int, seconds: float, **extra) -> dict:
    return {"step": i, "nfe": nfe, "seconds": seconds, **extra}
