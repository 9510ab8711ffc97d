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
| ``cond_hidden`` (prompt_tuning) | the conditional half of ``prompt_embeds`` (call ``pipe(**kwargs)``, no prompt) |
| cfgpp's ``lam`` | the guidance scale; the step-end callback renoises with the unconditional output |

Coupled samplers (edict, bdia) and DDPM noise maps have no stock equivalent.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .api import guidance_at
from .errors import InversaError
from .families import DiffusersModel
from .methods import cfgpp
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


class CapturedScale(ReplayedScale):
    """CFG++'s ``lam`` as the pipeline's guidance scale, keeping the direction ``c - u`` it scales.

    The pipeline then steps with the guided output; CFG++ renoises with the unconditional
    one instead, which the step-end callback adds back: ``x_prev += B_u (u - out_l)``.
    """

    direction = None

    def __mul__(self, other: Tensor) -> Tensor:
        self.direction = other
        return super().__mul__(other)

    __rmul__ = __mul__


class StockReplay:
    """``callback_on_step_end`` replaying an inversion's per-step state; ``pipe(prompt, **replay.kwargs)``.

    ``kwargs`` holds what the first step needs (``latents``, steps, guidance scale, the first
    null embedding) and the callback itself, which sets up every later step.
    """

    def __init__(self, model: DiffusersModel, inv: Inversion):
        self.state, self.timesteps, self.inv, self.prediction = inv.state, inv.timesteps, inv, model.prediction
        tuned = "uncond_hidden" in self.state or "cond_hidden" in self.state
        self.tensor_inputs = ["latents"] + (["prompt_embeds"] if tuned else [])
        guidance = model.embedded_guidance if model.family == "lcm" else inv.guidance
        self.kwargs = {"latents": inv.x_T, "num_inference_steps": len(inv.timesteps),
                       "guidance_scale": self.scale(0) if "guidance_w" in self.state else guidance,
                       "callback_on_step_end": self, "callback_on_step_end_tensor_inputs": self.tensor_inputs}
        if "uncond_hidden" in self.state:
            uncond = model.condition(inv.prompts, inv.guidance, inv.negative).uncond
            self.kwargs["negative_prompt_embeds"] = self.state["uncond_hidden"][0].to(model.dtype)
            if uncond.pooled is not None:
                self.kwargs["negative_pooled_prompt_embeds"] = uncond.pooled.to(model.dtype)
        if "cond_hidden" in self.state:  # the prompt goes in as embeddings: the call takes no prompt
            condition = model.condition(inv.prompts, inv.guidance, inv.negative)
            self.kwargs["prompt_embeds"] = self.state["cond_hidden"][0].to(model.dtype)
            self.kwargs["negative_prompt_embeds"] = condition.uncond.hidden.to(model.dtype)
            pooled = {"pooled_prompt_embeds": condition.cond.pooled,
                      "negative_pooled_prompt_embeds": condition.uncond.pooled}
            self.kwargs.update({k: v.to(model.dtype) for k, v in pooled.items() if v is not None})
        self.cfgpp = CapturedScale(float(inv.config.get("lam", cfgpp.LAM))) if inv.method == "cfgpp" else None
        if self.cfgpp is not None:
            self.kwargs["guidance_scale"] = self.cfgpp

    def scale(self, i: int) -> ReplayedScale:
        return ReplayedScale(guidance_at(self.state, float(self.timesteps[i])))

    def __call__(self, pipe, i: int, t, tensors: dict) -> dict:
        out = {}
        if "offsets" in self.state:
            out["latents"] = tensors["latents"] + self.state["offsets"][i].to(tensors["latents"])
        if self.cfgpp is not None:
            levels = self.inv.alphas[i], self.inv.sigmas[i], self.inv.alphas[i + 1], self.inv.sigmas[i + 1]
            b_u = cfgpp.coefficients(self.prediction, *levels)[2]
            out["latents"] = tensors["latents"] - b_u * self.cfgpp.w * self.cfgpp.direction.to(tensors["latents"])
        if i + 1 < len(self.timesteps):
            if "guidance_w" in self.state:
                pipe._guidance_scale = self.scale(i + 1)
            if "uncond_hidden" in self.state:
                embeds = tensors["prompt_embeds"]
                null = self.state["uncond_hidden"][i + 1].to(embeds)
                out["prompt_embeds"] = torch.cat([null, embeds[null.shape[0]:]])
            if "cond_hidden" in self.state:
                embeds = tensors["prompt_embeds"]
                tuned = self.state["cond_hidden"][i + 1].to(embeds)
                out["prompt_embeds"] = torch.cat([embeds[:embeds.shape[0] - tuned.shape[0]], tuned])
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
    if getattr(model, "video", False):  # per-step state through the video loops: not replayed here
        raise InversaError(f"stock_callback does not drive {type(model.pipe).__name__}; for ddim, fixed_point and "
                           "preciseinv call pipe(prompt, latents=inv.x_T, ...) (CogVideoX: latents="
                           "inversa.families.cogvideox.to_pipeline(inv.x_T))")
    if inv.method == "cfgpp" and model.family == "lcm":
        raise InversaError("a stock LCM pipeline cannot replay a cfgpp inversion: it embeds its guidance and runs "
                           "no unconditional branch; use inversa.reconstruct")
    replay = StockReplay(model, inv)
    if inv.method == "negative_prompt":  # the source prompt is the unconditional prompt too
        replay.kwargs["negative_prompt"] = list(inv.prompts)
    return replay
