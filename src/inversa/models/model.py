"""What inversion methods see of a model: the :class:`Model` interface and its data types.

Methods see a :class:`Model`: ``encode``/``decode`` between images in [-1, 1] and
latents, ``encode_prompt`` for text, ``schedule`` for noise levels and ``predict``
for the raw network output (epsilon, v or flow velocity, named by
``model.prediction``) with classifier-free guidance. The step algebra lives in
:mod:`inversa.core.samplers` and the data types in :mod:`inversa.core.types`; diffusers pipelines
are adapted per family in :mod:`inversa.models.diffusers` (loaded by :func:`inversa.models.diffusers.loader.load_model`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Condition, Embeds, Schedule


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

    rescales_guidance = False  # whether :meth:`rescale_guided` changes ``u + w (c - u)`` (Lumina-2, Qwen-Image)

    def rescale_guided(self, guided: Tensor, cond: Tensor) -> Tensor:
        """A family's normalisation of the guided output against the conditional one (none by default)."""
        return guided

    def predict(self, x: Tensor, t: float, condition: Condition, guidance: float | Tensor | None = None) -> Tensor:
        """Guided output ``u + w (c - u)``; ``guidance`` overrides the condition's scale (a float or per sample)."""
        w = condition.guidance if guidance is None else guidance
        if condition.uncond is None or (not torch.is_tensor(w) and w == 1.0):
            return self.forward(x, t, condition.cond.expand(x.shape[0]))
        if not torch.is_tensor(w) and w == 0.0 and not self.rescales_guidance:  # a rescaled u still needs c
            return self.forward(x, t, condition.uncond.expand(x.shape[0]))
        u, c = self.predict_parts(x, t, condition)
        if torch.is_tensor(w):
            w = w.to(u).view(-1, *([1] * (u.ndim - 1)))
        return self.rescale_guided(u + w * (c - u), c)



def image_size(model: Model, size: int | None) -> int | None:
    """Side images are cropped and resized to: ``None`` -> the model's size, ``0`` -> keep (CLI and API alike)."""
    return model.default_size() if size is None else (size or None)
