"""Wan 2.1 / 2.2 (``WanPipeline``): a flow-matching video transformer over a causal 3D VAE.

| code | WanPipeline | meaning |
|---|---|---|
| ``normalise(z)`` | ``(z - latents_mean) * (1 / latents_std)`` | per-channel latent statistics of the VAE |
| ``stock_scheduler()`` | ``FlowMatchEulerDiscreteScheduler`` | Euler on the pipeline's shift (``shift``, or UniPC's ``flow_shift``) |
| ``network(x, t)`` | ``transformer(latents, t.expand(B))`` | ``t = 1000 sigma``; ``expand_timesteps``: one t per token |
| ``transformer_2`` | ``boundary_ratio`` | Wan 2.2 A14B: the low-noise expert below ``boundary_ratio * 1000`` |

The Wan hub configs sample with UniPC, a multistep solver that no single-step inversion
can mirror; inversa inverts and replays the Euler member of the same shifted grid.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.models.diffusers.sd3 import SD3Model
from inversa.models.diffusers.video import VideoMixin


class WanModel(VideoMixin, SD3Model):
    family = "wan"
    prediction = "flow"
    fps = 16.0  # what the pipeline's examples export at
    stock_sampler = "FlowMatchEulerDiscreteScheduler"

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        kind = type(pipe.scheduler).__name__
        if "FlowMatch" not in kind and not pipe.scheduler.config.get("use_flow_sigmas"):
            raise InversaError(f"unsupported Wan scheduler {kind} (not a flow schedule); "
                               "use FlowMatchEulerDiscreteScheduler or UniPC with use_flow_sigmas")
        super(SD3Model, self).__init__(pipe, name, embedded_guidance)
        self.temporal = int(pipe.vae_scale_factor_temporal)
        cfg = self.vae.config
        self.latents_mean = torch.tensor(cfg.latents_mean, dtype=torch.float64).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(cfg.latents_std, dtype=torch.float64).view(1, -1, 1, 1, 1)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(pipe).__name__ == "WanPipeline"

    def normalise(self, z: Tensor) -> Tensor:
        return (z - self.latents_mean.to(z)) / self.latents_std.to(z)

    def denormalise(self, latents: Tensor) -> Tensor:
        return latents * self.latents_std.to(latents) + self.latents_mean.to(latents)

    def stock_scheduler(self, spacing: str | None = None):
        """Flow Euler on the pipeline's shifted grid: a UniPC config's ``flow_shift`` becomes ``shift``."""
        cfg = self.scheduler.config
        over = {} if "FlowMatch" in type(self.scheduler).__name__ else {"shift": float(cfg.get("flow_shift", 1.0))}
        return self.scheduler_from_config(**over)

    def expert(self, t: float):
        """Wan 2.2's two experts: ``transformer`` at high noise, ``transformer_2`` below the boundary."""
        ratio = self.pipe.config.get("boundary_ratio")
        low = getattr(self.pipe, "transformer_2", None)
        if ratio is None or low is None or t >= ratio * self.train_steps():
            return self.net
        return low

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, f, h, w = x.shape
        # as the stock loop: the scheduler's float32 timestep (the transformer embeds it sinusoidally)
        tt = torch.full((n,), float(t), device=self.device, dtype=torch.float32)
        if self.pipe.config.get("expand_timesteps"):  # Wan 2.2 TI2V: one timestep per 2x2 token
            tt = tt[:, None].expand(n, f * (h // 2) * (w // 2))
        return self.expert(float(t))(hidden_states=x, timestep=tt, encoder_hidden_states=self.on_device(embeds.hidden),
                                     return_dict=False)[0]
