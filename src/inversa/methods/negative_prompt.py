"""Negative-prompt inversion (Miyake et al. 2023): the source prompt is also the unconditional prompt.

With ``uncond = cond`` classifier-free guidance collapses to the conditional output
at any scale, so DDIM inversion and sampling agree without any optimisation. For
editing, the sampler keeps the source prompt as the negative and puts the target
prompt as the positive one.
"""
from __future__ import annotations

import torch

from inversa.core.types import Condition
from inversa.methods import StockHook, Trace, register
from inversa.methods.ddim import naive_inversion


@register("negative_prompt", sample=lambda *a: sample(*a), cost="1 NFE per step (no optimisation)",
          target_negative="source", stock=lambda model, inv: StockHook({"negative_prompt": list(inv.prompts)}))
def invert(model, z0, condition, schedule, *, keep_trajectory: bool = True):
    """DDIM inversion with the source prompt as unconditional prompt (guidance collapses to the prompt)."""
    states, steps = naive_inversion(model, z0, condition, schedule, guidance=1.0, desc="negative_prompt")
    return Trace(states[0], states if keep_trajectory else None, {}, steps)


@torch.no_grad()
def sample(model, inv, schedule, condition):
    """Guided sampling with the inversion's (source) prompts as the unconditional prompt."""
    from inversa.core.replay import denoise

    uncond = model.encode_prompt(list(inv.prompts))
    return denoise(model, inv.x_T, schedule, Condition(condition.cond, uncond, condition.guidance), inv.state)
