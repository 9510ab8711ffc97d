"""Stable Diffusion 1.x/2.x (epsilon or v prediction): a UNet on a variance-preserving schedule."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InversaError
from ..model import Embeds, Schedule, vp_timesteps
from .base import DiffusersModel


class SDModel(DiffusersModel):
    """UNet + discrete-time VP schedule; SDXL and LCM extend it."""

    family = "sd"

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
        return 2 ** (len(self.net.config.block_out_channels) - 1)

    def noise_levels(self, steps: int, spacing: str | None, shape=None) -> Schedule:
        spacing = spacing or self.scheduler.config.get("timestep_spacing", "leading")
        ts = vp_timesteps(self.train_steps(), steps, spacing, self.scheduler.config.get("steps_offset", 0))
        return self.schedule_from_timesteps(ts, spacing)

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom") -> Schedule:
        ts = torch.as_tensor(timesteps, dtype=torch.float64).round()
        ac = self.scheduler.alphas_cumprod.double()[ts.long()]
        a = torch.cat([ac.sqrt(), torch.ones(1, dtype=torch.float64)])
        s = torch.cat([(1 - ac).sqrt(), torch.zeros(1, dtype=torch.float64)])
        return Schedule(ts, a, s, spacing)

    def unet_kwargs(self, x: Tensor, embeds: Embeds) -> dict:
        """Extra UNet inputs of the family (SDXL micro-conditioning, LCM guidance embedding)."""
        return {}

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        tt = torch.full((x.shape[0],), int(round(float(t))), device=self.device, dtype=torch.long)
        return self.net(x, tt, encoder_hidden_states=self.on_device(embeds.hidden), return_dict=False,
                        **self.unet_kwargs(x, embeds))[0]
