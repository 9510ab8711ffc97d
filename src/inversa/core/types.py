"""The data types every room shares: prompt encodings, conditions, noise schedules, and what core code calls on a model.

:class:`Predictor` is the part of :class:`inversa.models.model.Model` that the core steps call
(the full interface lives with the models).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from inversa.core.errors import InversaError

SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class Embeds:
    """A prompt encoding: token states and, for SDXL/SD3, the pooled vector. Batch first."""

    hidden: Tensor
    pooled: Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def expand(self, n: int) -> "Embeds":
        if len(self) == n:
            return self
        if len(self) != 1:
            raise InversaError(f"{len(self)} prompts for a batch of {n} images")
        return Embeds(self.hidden.expand(n, *self.hidden.shape[1:]),
                      None if self.pooled is None else self.pooled.expand(n, *self.pooled.shape[1:]))

    def select(self, index) -> "Embeds":
        return Embeds(self.hidden[index], None if self.pooled is None else self.pooled[index])

    @staticmethod
    def cat(parts: list["Embeds"]) -> "Embeds":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Embeds(torch.cat([p.hidden for p in parts]), pooled)

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        out = {f"{prefix}.hidden": self.hidden}
        if self.pooled is not None:
            out[f"{prefix}.pooled"] = self.pooled
        return out

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor], prefix: str) -> "Embeds | None":
        if f"{prefix}.hidden" not in tensors:
            return None
        return Embeds(tensors[f"{prefix}.hidden"], tensors.get(f"{prefix}.pooled"))


@dataclass
class Condition:
    """What the network is conditioned on: prompt, optional unconditional prompt, guidance scale."""

    cond: Embeds
    uncond: Embeds | None = None
    guidance: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance != 1.0

    def with_guidance(self, w: float) -> "Condition":
        return replace(self, guidance=float(w))


@dataclass(frozen=True)
class Schedule:
    """Noise levels of a sampling run, noisiest first.

    Level ``i`` (``x = alphas[i] x0 + sigmas[i] eps``) is the state before step ``i``,
    whose network input time is ``timesteps[i]``; level ``N`` is the clean latent.
    """

    timesteps: Tensor
    alphas: Tensor
    sigmas: Tensor
    spacing: str = ""

    def __len__(self) -> int:
        return len(self.timesteps)

    def levels(self, i: int) -> tuple[float, float, float, float]:
        """(alpha_i, sigma_i, alpha_{i+1}, sigma_{i+1}) of step ``i``."""
        a, s = self.alphas.tolist(), self.sigmas.tolist()
        return a[i], s[i], a[i + 1], s[i + 1]

    def terminal(self) -> dict[str, float]:
        """The starting noise level: how much image is left in x_T."""
        a, s = float(self.alphas[0]), float(self.sigmas[0])
        return {"t_T": float(self.timesteps[0]), "alpha_T": a, "sigma_T": s, "snr_T": a * a / max(s * s, 1e-30)}


def vp_timesteps(train_steps: int, steps: int, spacing: str, offset: int = 0) -> list[int]:
    """Discrete timesteps of a variance-preserving sampler, as diffusers' DDIM spaces them."""
    if steps < 1 or steps > train_steps:
        raise InversaError(f"steps must be between 1 and {train_steps}, got {steps}")
    if spacing == "leading":
        ratio = train_steps // steps
        ts = [i * ratio + offset for i in range(steps)][::-1]
    elif spacing == "trailing":
        ratio = train_steps / steps
        ts = [round(train_steps - i * ratio) - 1 for i in range(steps)]
    elif spacing == "linspace":
        ts = [round(v) for v in torch.linspace(0, train_steps - 1, steps, dtype=torch.float64).tolist()][::-1]
    else:
        raise InversaError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return [min(max(t, 0), train_steps - 1) for t in ts]


class Predictor(Protocol):
    """What core code calls on a model: its output type and the guided network call (:class:`~inversa.models.model.Model`)."""

    prediction: str
    nfe: int

    def predict(self, x: Tensor, t: float, condition: Condition, guidance: float | Tensor | None = None) -> Tensor:
        ...
