"""Latent Consistency Models: a UNet with the guidance scale embedded as an input (no CFG needed).

Sampled deterministically with DDIM (as PreciseInv does): the LCM scheduler's multistep sampling
injects fresh noise, and ``LatentConsistencyModelPipeline`` cannot run DDIM (it passes
``original_inference_steps``), so the stock pipeline for an LCM inversion is
``StableDiffusionPipeline.from_pipe(pipe, scheduler=...)`` with ``guidance_scale`` = the embedded scale.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.embedding import guidance_embedding
from inversa.core.types import Embeds
from inversa.models.diffusers.sd import SDModel


class LCMModel(SDModel):
    family = "lcm"
    paper_lr = 0.05
    default_embedded_guidance = 8.5
    stock_label = "LCM"
    stock_without_cfg = "it embeds its guidance and runs no unconditional branch"

    def stock_guidance(self, guidance: float) -> float:
        """The embedded scale: the stock (SD) pipeline call feeds its ``guidance_scale`` to the network."""
        return self.embedded_guidance

    @classmethod
    def accepts(cls, pipe) -> bool:
        return super().accepts(pipe) and bool(pipe.unet.config.get("time_cond_proj_dim"))

    def unet_kwargs(self, x: Tensor, embeds: Embeds) -> dict:
        w = torch.full((x.shape[0],), self.embedded_guidance - 1.0)
        return {"timestep_cond": self.on_device(guidance_embedding(w, self.net.config.time_cond_proj_dim))}
