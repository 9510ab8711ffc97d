"""Replay an inversion in the user's own diffusers pipeline.

inversa's sampler equals the family's stock deterministic scheduler step for step
(:func:`stock_scheduler`), so ``pipe(prompt, latents=inv.x_T, ...)`` regenerates a plain
``x_T``. Per-step side state is replayed by a ``callback_on_step_end``
(:func:`stock_callback`), which diffusers calls after every step with the loop's tensors:

| state | replayed as |
|---|---|
| ``guidance_t``/``guidance_w`` (polaris) | the pipeline's guidance scale for the next step |
| ``uncond_hidden`` (null_text) | the unconditional half of ``prompt_embeds`` for the next step |
| ``offsets`` (direct) | added to ``latents`` after each step |

Coupled samplers (edict, bdia) and DDPM noise maps have no stock equivalent.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .api import guidance_at
from .errors import InversaError
from .families import DiffusersModel
from .model import SPACINGS
from .result import Inversion

UNREPLAYABLE = {
    "coupled": "its sampler steps a coupled pair of latents, which no stock scheduler does",
    "noise_maps": "its DDPM steps add recorded noise maps, while a stock pipeline draws fresh noise",
}


def stock_scheduler(pipe, spacing: str | None = None):
    """The deterministic stock scheduler inversa's sampler equals for ``pipe``'s family (DDIM eta 0, flow Euler).

    ``spacing`` overrides the config's ``timestep_spacing`` (pass the inversion's ``inv.spacing``).
    """
    model = pipe if isinstance(pipe, DiffusersModel) else DiffusersModel(pipe)
    return model.stock_scheduler(spacing if spacing in SPACINGS else None)


class ReplayedScale:
    """A guidance scale (one, or one per sample) that keeps the pipeline's CFG branch on.

    Pipelines run both branches only while ``guidance_scale > 1``; a replayed POLARIS
    scale may be lower and still needs both.
    """

    def __init__(self, w):
        self.w = w

    def __gt__(self, other) -> bool:
        return True

    def __mul__(self, other: Tensor) -> Tensor:
        if not torch.is_tensor(self.w):
            return self.w * other
        return self.w.to(other).view(-1, *([1] * (other.ndim - 1))) * other

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"ReplayedScale({self.w})"


class StockReplay:
    """``callback_on_step_end`` replaying an inversion's per-step state; ``pipe(prompt, **replay.kwargs)``.

    ``kwargs`` holds what the first step needs (``latents``, steps, guidance scale, the first
    null embedding) and the callback itself, which sets up every later step.
    """

    def __init__(self, model: DiffusersModel, inv: Inversion):
        self.state, self.timesteps = inv.state, inv.timesteps
        self.tensor_inputs = ["latents"] + (["prompt_embeds"] if "uncond_hidden" in self.state else [])
        guidance = model.embedded_guidance if model.family == "lcm" else inv.guidance
        self.kwargs = {"latents": inv.x_T, "num_inference_steps": len(inv.timesteps),
                       "guidance_scale": self.scale(0) if "guidance_w" in self.state else guidance,
                       "callback_on_step_end": self, "callback_on_step_end_tensor_inputs": self.tensor_inputs}
        if "uncond_hidden" in self.state:
            uncond = model.condition(inv.prompts, inv.guidance, inv.negative).uncond
            self.kwargs["negative_prompt_embeds"] = self.state["uncond_hidden"][0].to(model.dtype)
            if uncond.pooled is not None:
                self.kwargs["negative_pooled_prompt_embeds"] = uncond.pooled.to(model.dtype)

    def scale(self, i: int) -> ReplayedScale:
        return ReplayedScale(guidance_at(self.state, float(self.timesteps[i])))

    def __call__(self, pipe, i: int, t, tensors: dict) -> dict:
        out = {}
        if "offsets" in self.state:
            out["latents"] = tensors["latents"] + self.state["offsets"][i].to(tensors["latents"])
        if i + 1 < len(self.timesteps):
            if "guidance_w" in self.state:
                pipe._guidance_scale = self.scale(i + 1)
            if "uncond_hidden" in self.state:
                embeds = tensors["prompt_embeds"]
                null = self.state["uncond_hidden"][i + 1].to(embeds)
                out["prompt_embeds"] = torch.cat([null, embeds[null.shape[0]:]])
        return out


def stock_callback(pipe, inv: Inversion) -> StockReplay:
    """A ``callback_on_step_end`` (with the call's ``kwargs``) replaying ``inv`` in the stock ``pipe``.

    Raises :class:`InversaError` for methods whose sampler a stock pipeline cannot express.
    """
    for key, why in UNREPLAYABLE.items():
        if key in inv.state:
            raise InversaError(f"a stock pipeline cannot replay a {inv.method} inversion: {why}; "
                               f"use inversa.reconstruct")
    model = pipe if isinstance(pipe, DiffusersModel) else DiffusersModel(pipe)
    if model.family == "flux":  # packed latents, true CFG and separate negative embeddings: not replayed here
        raise InversaError("stock_callback does not drive FluxPipeline; for ddim, fixed_point and preciseinv "
                           "call pipe(prompt, latents=inversa.families.flux.pack(inv.x_T), ...)")
    replay = StockReplay(model, inv)
    if inv.method == "negative_prompt":  # the source prompt is the unconditional prompt too
        replay.kwargs["negative_prompt"] = list(inv.prompts)
    return replay
