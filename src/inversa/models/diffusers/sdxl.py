"""Stable Diffusion XL (and SDXL-Turbo): two text encoders, pooled text and size micro-conditioning."""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds
from inversa.models.diffusers.sd import SDModel


class SDXLModel(SDModel):
    family = "sdxl"
    paper_lr = 0.05

    @classmethod
    def accepts(cls, pipe) -> bool:
        return super().accepts(pipe) and pipe.unet.config.get("addition_embed_type") == "text_time"

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        out = self.pipeline_prompt(prompts)
        return Embeds(out[0].float(), out[2].float())

    def encode_negative(self, prompts: list[str]) -> Embeds:
        """Empty negative prompts become zeros when the pipeline says so (``force_zeros_for_empty_prompt``)."""
        out = self.encode_prompt(prompts)
        if not self.pipe.config.get("force_zeros_for_empty_prompt", False):
            return out
        keep = torch.tensor([bool(p) for p in prompts], dtype=out.hidden.dtype)
        return Embeds(out.hidden * keep.view(-1, 1, 1), out.pooled * keep.view(-1, 1))

    def unet_kwargs(self, x: Tensor, embeds: Embeds) -> dict:
        h, w = x.shape[-2] * self.vae_scale, x.shape[-1] * self.vae_scale
        ids = torch.tensor([h, w, 0, 0, h, w], device=self.device, dtype=self.dtype).expand(x.shape[0], 6)
        return {"added_cond_kwargs": {"text_embeds": self.on_device(embeds.pooled), "time_ids": ids}}
