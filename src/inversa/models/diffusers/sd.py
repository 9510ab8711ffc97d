"""Stable Diffusion 1.x/2.x (epsilon or v prediction): a UNet on a variance-preserving schedule."""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import SPACINGS, Embeds, Schedule
from inversa.models.diffusers.base import DiffusersModel


class SDModel(DiffusersModel):
    """UNet + discrete-time VP schedule; SDXL and LCM extend it."""

    family = "sd"
    paper_lr = 0.1
    stock_sampler = "DDIMScheduler"  # eta 0; SDXL, LCM and Turbo inherit it (the LCM scheduler adds noise)

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.prediction = self.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise InversaError(f"unsupported prediction type {self.prediction!r}; supported: epsilon, v_prediction")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return getattr(pipe, "unet", None) is not None

    @property
    def latent_multiple(self) -> int:
        """A UNet's downsampling; a transformer on this schedule (PixArt, HunyuanDiT, CogVideoX): its patch."""
        blocks = self.net.config.get("block_out_channels")
        return 2 ** (len(blocks) - 1) if blocks else super().latent_multiple

    def stock_scheduler(self, spacing: str | None = None):
        """The pipeline's scheduler config as DDIM with eta 0 (no x0 clipping: latents are unbounded)."""
        if spacing is not None and spacing not in SPACINGS:
            raise InversaError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
        over = {"clip_sample": False, "thresholding": False, **({"timestep_spacing": spacing} if spacing else {})}
        return self.scheduler_from_config(**over)

    def noise_levels(self, steps: int, spacing: str | None, shape=None) -> Schedule:
        if not 1 <= steps <= self.train_steps():
            raise InversaError(f"steps must be between 1 and {self.train_steps()}, got {steps}")
        sched = self.stock_scheduler(spacing)
        sched.set_timesteps(steps)
        return self.schedule_from_timesteps(sched.timesteps.tolist(), sched.config.timestep_spacing, sched)

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom", sched=None) -> Schedule:
        """VP levels of ``timesteps``, ending on the stock sampler's final level (``set_alpha_to_one``)."""
        sched = sched or self.stock_scheduler()
        ts = torch.as_tensor(timesteps, dtype=torch.float64).round()
        ac = torch.cat([sched.alphas_cumprod.double()[ts.long()], torch.as_tensor(sched.final_alpha_cumprod).double().view(1)])
        return Schedule(ts, ac.sqrt(), (1 - ac).sqrt(), spacing)

    def unet_kwargs(self, x: Tensor, embeds: Embeds) -> dict:
        """Extra UNet inputs of the family (SDXL micro-conditioning, LCM guidance embedding)."""
        return {}

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        tt = torch.full((x.shape[0],), int(round(float(t))), device=self.device, dtype=torch.long)
        return self.net(x, tt, encoder_hidden_states=self.on_device(embeds.hidden), return_dict=False,
                        **self.unet_kwargs(x, embeds))[0]
