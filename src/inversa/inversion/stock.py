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

A method adds what else its call needs through its registration's ``stock`` hook (CFG++'s ``lam``
as the guidance scale and its renoising, negative-prompt inversion's negative prompt); a state key
declared ``unreplayable`` (coupled latents, DDPM noise maps) has no stock equivalent, and a family
says when its pipeline cannot be driven (``stock_callback_refusal``) or runs no CFG branch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.replay import guidance_at
from inversa.core.types import SPACINGS
from inversa.io.result import Inversion
from inversa.methods import StockHook, get_method
from inversa.models.diffusers.base import DiffusersModel
from inversa.models.diffusers.loader import from_pipeline


def stock_scheduler(pipe, spacing: str | None = None):
    """The deterministic stock scheduler inversa's sampler equals for ``pipe``'s family (DDIM eta 0, flow Euler).

    ``spacing`` overrides the config's ``timestep_spacing`` (pass the inversion's ``inv.spacing``).
    """
    model = pipe if isinstance(pipe, DiffusersModel) else from_pipeline(pipe)
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

    def __init__(self, model: DiffusersModel, inv: Inversion, hook: StockHook | None = None):
        self.state, self.timesteps, self.inv = inv.state, inv.timesteps, inv
        self.hook = hook or StockHook()
        tuned = "uncond_hidden" in self.state or "cond_hidden" in self.state
        self.tensor_inputs = ["latents"] + (["prompt_embeds"] if tuned else [])
        guidance = model.stock_guidance(inv.guidance)
        # one scale object, updated in place: pipelines that guide with their local ``guidance_scale`` (SANA,
        # PixArt, HunyuanDiT) see the new value as well as those reading ``pipe._guidance_scale``
        self.replayed = self.scale(0) if "guidance_w" in self.state else None
        self.kwargs = {"latents": inv.x_T, "num_inference_steps": len(inv.timesteps),
                       "guidance_scale": self.replayed if self.replayed is not None else guidance,
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
        self.kwargs.update(self.hook.kwargs)

    def scale(self, i: int) -> ReplayedScale:
        return ReplayedScale(guidance_at(self.state, float(self.timesteps[i])))

    def __call__(self, pipe, i: int, t, tensors: dict) -> dict:
        out = {}
        if "offsets" in self.state:
            out["latents"] = tensors["latents"] + self.state["offsets"][i].to(tensors["latents"])
        if self.hook.step_end is not None:
            out["latents"] = self.hook.step_end(i, tensors["latents"])
        if i + 1 < len(self.timesteps):
            if "guidance_w" in self.state:
                self.replayed.w = self.scale(i + 1).w
                pipe._guidance_scale = self.replayed
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

    Raises :class:`InversaError` for methods whose sampler a stock pipeline cannot express
    (a state key the method declares ``unreplayable``) and for families whose pipeline it cannot drive.
    """
    spec = get_method(inv.method)
    for key in inv.state:
        why = spec.state[key].unreplayable if key in spec.state else ""
        if why:
            raise InversaError(f"a stock pipeline cannot replay a {inv.method} inversion: {why}; "
                               f"use inversa.reconstruct")
    model = pipe if isinstance(pipe, DiffusersModel) else from_pipeline(pipe)
    refusal = model.stock_callback_refusal  # a family whose stock loop a callback cannot steer
    if refusal and (model.packs_latents or inv.state or spec.stock is not None):
        raise InversaError(f"a stock {type(model.pipe).__name__} cannot replay a {inv.method} inversion: {refusal}; "
                           f"use inversa.reconstruct")
    if getattr(model, "video", False):  # per-step state through the video loops: not replayed here
        raise InversaError(f"stock_callback does not drive {type(model.pipe).__name__}; for ddim, fixed_point and "
                           "preciseinv call pipe(prompt, latents=inv.x_T, ...) (CogVideoX: latents="
                           "inversa.models.diffusers.cogvideox.to_pipeline(inv.x_T))")
    why = model.embeddings_unreplayable
    if why and ("uncond_hidden" in inv.state or "cond_hidden" in inv.state):
        raise InversaError(f"a stock {type(model.pipe).__name__} cannot replay a {inv.method} inversion: {why}; "
                           f"use inversa.reconstruct")
    return StockReplay(model, inv, spec.stock(model, inv) if spec.stock is not None else None)
