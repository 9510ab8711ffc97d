"""The plain sampler from ``x_T``, replaying the side state a method recorded (shared by reconstruct, edit, bench, stock)."""
from __future__ import annotations

from torch import Tensor

from inversa.core import samplers
from inversa.core.types import Condition, Embeds, Predictor, Schedule


def denoise(model: Predictor, x_T: Tensor, schedule: Schedule, condition: Condition,
            state: dict[str, Tensor] | None = None) -> Tensor:
    """The sampler from ``x_T``, replaying the side state a method recorded (see :func:`denoise_step`).

    Per-step state must hold one entry per step of ``schedule`` (:func:`sample` checks it against
    the method's declaration).
    """
    state = state or {}
    x = x_T
    for i in range(len(schedule)):
        x = denoise_step(model, x, i, schedule, condition, state)
    return x


def denoise_step(model: Predictor, x: Tensor, i: int, schedule: Schedule, condition: Condition,
                 state: dict[str, Tensor]) -> Tensor:
    """Step ``i`` of the sampler with what the state records for it.

    ``guidance_t``/``guidance_w``: per-step guidance keyed by timestep (nearest is used
    when sampling on other timesteps); ``uncond_hidden``: per-step unconditional
    embeddings (N, B, L, D); ``offsets``: added after the DDIM step (N, B, ...);
    ``noise_maps``: a DDPM step (noise scale ``noise_eta``, default 1) adding the map, or
    the map itself on a noiseless step (N, B, ...).
    """
    t, levels = float(schedule.timesteps[i]), schedule.levels(i)
    w = guidance_at(state, t) if "guidance_w" in state else None
    if "uncond_hidden" in state:
        condition = Condition(condition.cond, Embeds(state["uncond_hidden"][i], condition.uncond.pooled
                                                     if condition.uncond is not None else None), condition.guidance)
    out = model.predict(x, t, condition, w)
    if "noise_maps" in state:
        std = samplers.ddpm_noise(*levels, eta=float(state.get("noise_eta", 1.0)))
        return samplers.step(model.prediction, x, out, *levels, noise=std) + (std or 1.0) * state["noise_maps"][i].to(x)
    x = samplers.step(model.prediction, x, out, *levels)
    return x + state["offsets"][i].to(x) if "offsets" in state else x


def guidance_at(state: dict[str, Tensor], t: float):
    """The recorded guidance scale of the nearest recorded timestep (per sample if recorded so)."""
    ts = state["guidance_t"].double()
    j = int((ts - t).abs().argmin())
    w = state["guidance_w"][j]
    return w if w.ndim else float(w)
