"""Lumina-Image 2.0: a single-stream flow DiT that runs time backwards, as Lumina2Pipeline runs it.

| code | Lumina2Pipeline | meaning |
|---|---|---|
| ``1 - t / 1000`` | ``current_timestep`` | Lumina's time: 0 is noise, 1 the image (the reverse of the scheduler's sigma) |
| ``-net(...)`` | ``noise_pred = -noise_pred`` | its output points from noise to image: negated into the scheduler's velocity |
| ``Embeds.pooled`` | ``prompt_attention_mask`` | Gemma-2 tokens kept (system prompt + ``<Prompt Start>`` + prompt) |
| ``encode_negative`` | ``negative_prompt`` | the negative prompt is encoded bare, without the system prompt |
| ``shift_mu`` | ``calculate_shift(latents.shape[1])`` | the pipeline feeds the *channel* count as the sequence length |
| ``predict`` | ``cfg_normalization`` | CFG, then rescaled to the conditional output's norm along the last (width) axis |

Latents are not packed: ``pipe(latents=inv.x_T)``. ``cfg_trunc_ratio`` < 1 (CFG dropped for the
last steps) has no inversa equivalent; its default 1.0 keeps CFG on every step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd3 import SD3Model, calculate_shift


class Lumina2Model(SD3Model):
    family = "lumina2"
    max_sequence_length = 256  # the pipeline's default Gemma length (prompts are padded to it)
    injection_refusal = ("Lumina2's blocks are single-stream (text and image tokens share one self-attention): "
                         "no joint or cross-attention to inject into; use cross_replace=0 self_replace=0 or flowedit")
    stock_callback_refusal = ("it guides with the call's guidance_scale and normalises the guided output, which a "
                              "step-end callback cannot change")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "Lumina2Transformer2DModel"

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            out = self.pipe.encode_prompt(prompt=prompts, device=self.device, do_classifier_free_guidance=False,
                                          max_sequence_length=self.max_sequence_length)
        return Embeds(out[0].to(self.work_dtype), out[1].to(out[0].device, self.work_dtype))

    def encode_negative(self, prompts: list[str]) -> Embeds:
        """The pipeline encodes negative prompts bare: no system prompt, no ``<Prompt Start>``."""
        with torch.no_grad():
            hidden, mask = self.pipe._get_gemma_prompt_embeds(prompt=prompts, device=self.device,
                                                              max_sequence_length=self.max_sequence_length)
        return Embeds(hidden.to(self.work_dtype), mask.to(hidden.device, self.work_dtype))

    def shift_mu(self, shape) -> float:
        """The pipeline's ``calculate_shift`` of ``latents.shape[1]``: the channel count, whatever the resolution."""
        return calculate_shift(self.net.config.in_channels, self.scheduler.config)

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        dynamic = self.scheduler.config.get("use_dynamic_shifting")
        return self.linspace_levels(steps, self.shift_mu(shape), show_mu=dynamic)

    rescales_guidance = True

    def rescale_guided(self, guided: Tensor, cond: Tensor) -> Tensor:
        """``cfg_normalization``: the guided output rescaled to the conditional one's norm over the last axis."""
        # the pipeline's norms are of its (negated) network outputs: the same norms
        return guided * (cond.norm(dim=-1, keepdim=True) / guided.norm(dim=-1, keepdim=True))

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n = x.shape[0]
        # in float32, as the stock loop computes it from the scheduler's float32 timesteps
        t_lumina = 1 - torch.full((n,), float(t), device=self.device, dtype=torch.float32) / self.train_steps()
        out = self.net(hidden_states=x, timestep=t_lumina, encoder_hidden_states=self.on_device(embeds.hidden),
                       encoder_attention_mask=embeds.pooled.to(self.device, torch.long), return_dict=False)[0]
        return -out
