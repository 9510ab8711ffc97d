"""Latent Consistency Models: a UNet with the guidance scale embedded as an input (no CFG needed)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..model import Embeds, Schedule
from .sd import SDModel


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the guidance scale (LCM's ``time_cond_proj_dim`` input)."""
    w = w.float() * 1000.0
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([emb.sin(), emb.cos()], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class LCMModel(SDModel):
    family = "lcm"

    @classmethod
    def accepts(cls, pipe) -> bool:
        return super().accepts(pipe) and bool(pipe.unet.config.get("time_cond_proj_dim"))

    def noise_levels(self, steps: int, spacing: str | None, shape=None) -> Schedule:
        if spacing is not None:
            return super().noise_levels(steps, spacing, shape)
        sched = type(self.scheduler).from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        return self.schedule_from_timesteps(sched.timesteps.tolist(), spacing="lcm")

    def unet_kwargs(self, x: Tensor, embeds: Embeds) -> dict:
        w = torch.full((x.shape[0],), self.embedded_guidance - 1.0)
        return {"timestep_cond": self.on_device(guidance_embedding(w, self.net.config.time_cond_proj_dim))}
