"""What a method's loop returns, and the recorder that keeps bookkeeping out of the loop's mathematics.

A method walks the schedule with :meth:`Recorder.walk` and calls :meth:`Recorder.record` once per
step; the recorder times the step, reads its network evaluations off the model's counter (per
sample: one meaning of NFE everywhere) and keeps the trajectory noisiest first, as k-diffusion's
samplers keep their callbacks out of the update formulas.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from torch import Tensor


@dataclass
class Trace:
    """What a method returns: the noise, optional trajectory, side state and per-step diagnostics."""

    x_T: Tensor
    trajectory: list[Tensor] | None = None
    state: dict[str, Tensor] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)


def step_info(i: int, nfe: float, seconds: float, **extra) -> dict:
    """One step's diagnostics (NFE per sample, wall time, method-specific extras)."""
    return {"step": i, "nfe": nfe, "seconds": seconds, **extra}


class Recorder:
    """Per-step time, NFE (the model's counter / batch size) and the trajectory of one method's loop.

    ``inverse`` loops (clean end first) put each new state and step in front, so both read noisiest
    first whichever way the loop ran.
    """

    def __init__(self, model, start: Tensor, *, inverse: bool = True):
        self.model, self.inverse, self.n = model, inverse, start.shape[0]
        self.states, self.steps = [start], []
        self._i, self._t0, self._nfe0 = 0, 0.0, 0

    def walk(self, indices: Iterable[int], desc: str) -> Iterator[int]:
        """The step indices, each with its clock and counter started, behind a progress bar on stderr."""
        from tqdm.auto import tqdm

        for i in tqdm(list(indices), desc=desc, leave=False, disable=None, unit="step"):
            self._i, self._t0, self._nfe0 = i, time.perf_counter(), self.model.nfe
            yield i

    def schedule(self, schedule, desc: str) -> Iterator[int]:
        """The schedule's step indices in the loop's direction (from the clean end when ``inverse``)."""
        order = range(len(schedule))
        return self.walk(reversed(order) if self.inverse else order, desc)

    def record(self, x: Tensor | None, *, nfe: float = 0.0, **extra) -> dict:
        """Close the current step: keep ``x`` (unless None) and its diagnostics.

        ``nfe`` adds evaluations made for this step outside the loop (a pivot's naive step).
        """
        info = step_info(self._i, (self.model.nfe - self._nfe0) / self.n + nfe, time.perf_counter() - self._t0,
                         **extra)
        at = 0 if self.inverse else len(self.steps)
        self.steps.insert(at, info)
        if x is not None:
            self.states.insert(0 if self.inverse else len(self.states), x)
        return info

    def trace(self, x_T: Tensor, state: dict | None = None, keep_trajectory: bool = True,
              trajectory: list[Tensor] | None = None) -> Trace:
        """The :class:`Trace` of the loop (``trajectory`` replaces the recorded states where a method keeps its own)."""
        kept = self.states if trajectory is None else trajectory
        return Trace(x_T, kept if keep_trajectory else None, state or {}, self.steps)
