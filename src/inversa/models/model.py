"""What inversion methods see of a model: the :class:`Model` interface and its data types.

Methods see a :class:`Model`: ``encode``/``decode`` between images in [-1, 1] and
latents, ``encode_prompt`` for text, ``schedule`` for noise levels and ``predict``
for the raw network output (epsilon, v or flow velocity, named by
``model.prediction``) with classifier-free guidance. The step algebra lives in
:mod:`inversa.samplers`; diffusers pipelines are adapted per family in
:mod:`inversa.families` (``load_model`` and ``DiffusersModel`` are re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .errors import InversaError

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


class Model:
    """Interface every backend offers to the inversion methods (see :class:`DiffusersModel`)."""

    name: str = "model"
    family: str = ""
    prediction: str = "epsilon"
    device = torch.device("cpu")
    dtype = torch.float32
    nfe: int = 0  # network evaluations (rows: per sample) since the counter was last reset
    paper_lr: float | None = None  # PreciseInv's AdamW learning rate for the family (None: by prediction type)

    # images <-> latents -------------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        return images

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        return latents

    def check_size(self, height: int, width: int) -> None:
        return None

    def default_size(self) -> int | None:
        return None

    # text ---------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Embeds:
        raise NotImplementedError

    def condition(self, prompts: list[str] | str = "", guidance: float = 1.0,
                  negative: list[str] | str | None = "") -> Condition:
        """Encode prompts (and the negative/unconditional prompt when guidance is used)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cond = self.encode_prompt(prompts)
        uncond = None
        if guidance != 1.0 and negative is not None:
            negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
            uncond = self.encode_negative(negative)
        return Condition(cond, uncond, float(guidance))

    def encode_negative(self, prompts: list[str]) -> Embeds:
        """The unconditional branch's encoding (a family may zero empty prompts, as SDXL pipelines do)."""
        return self.encode_prompt(prompts)

    # noise levels -------------------------------------------------------------
    def schedule(self, steps: int, spacing: str | None = None, strength: float = 1.0,
                 shape: tuple[int, ...] | None = None) -> Schedule:
        """The last ``strength`` of a ``steps``-step schedule; ``shape`` is the latent's, for families
        whose levels depend on the resolution (FLUX's shift ``mu``)."""
        if not 0.0 < strength <= 1.0:
            raise InversaError(f"strength must be in (0, 1], got {strength}")
        out = self.noise_levels(steps, spacing, shape)
        start = steps - min(max(int(round(steps * strength)), 1), steps)
        return Schedule(out.timesteps[start:], out.alphas[start:], out.sigmas[start:], out.spacing)

    def noise_levels(self, steps: int, spacing: str | None, shape: tuple[int, ...] | None) -> Schedule:
        """The full ``steps``-step schedule (the hook :meth:`schedule` cuts by strength)."""
        raise NotImplementedError

    def schedule_from_timesteps(self, timesteps: list[float], spacing: str = "custom") -> Schedule:
        raise NotImplementedError

    def resample(self, schedule: Schedule, steps: int) -> Schedule:
        """A schedule with another number of steps over the same noise range (sampling != inversion steps)."""
        if steps == len(schedule):
            return schedule
        ts = schedule.timesteps.double()
        new = torch.linspace(float(ts[0]), float(ts[-1]), steps, dtype=torch.float64)
        return self.schedule_from_timesteps(new.tolist(), spacing=f"resampled({schedule.spacing})")

    # network ------------------------------------------------------------------
    def forward(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        """Raw network output for a batch (no guidance)."""
        raise NotImplementedError

    def predict_parts(self, x: Tensor, t: float, condition: Condition) -> tuple[Tensor, Tensor]:
        """(unconditional, conditional) outputs in one batched call."""
        n = x.shape[0]
        both = Embeds.cat([condition.uncond.expand(n), condition.cond.expand(n)])
        out = self.forward(torch.cat([x, x]), t, both)
        return out[:n], out[n:]

    def predict(self, x: Tensor, t: float, condition: Condition, guidance: float | Tensor | None = None) -> Tensor:
        """Guided output ``u + w (c - u)``; ``guidance`` overrides the condition's scale (a float or per sample)."""
        w = condition.guidance if guidance is None else guidance
        if condition.uncond is None or (not torch.is_tensor(w) and w == 1.0):
            return self.forward(x, t, condition.cond.expand(x.shape[0]))
        if not torch.is_tensor(w) and w == 0.0:
            return self.forward(x, t, condition.uncond.expand(x.shape[0]))
        u, c = self.predict_parts(x, t, condition)
        if torch.is_tensor(w):
            w = w.to(u).view(-1, *([1] * (u.ndim - 1)))
        return u + w * (c - u)


def __getattr__(name: str):
    """``load_model``/``DiffusersModel`` live with the families, which import this module."""
    if name in ("load_model", "DiffusersModel"):
        from . import families

        return getattr(families, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
