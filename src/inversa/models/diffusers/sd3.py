"""Stable Diffusion 3: an MMDiT transformer on a rectified-flow (flow matching) schedule."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.base import SUPPORTED, DiffusersModel


def flow_levels(sched, mu: float | None) -> Schedule:
    """The flow schedule of a stock scheduler whose timesteps are set, labelled with its shift (and ``mu``)."""
    sigmas = sched.sigmas.double()
    label = f"flow(shift={sched.config.get('shift', 1.0)}" + (f", mu={mu:.4g})" if mu is not None else ")")
    return Schedule(sched.timesteps.double(), 1.0 - sigmas, sigmas, label)


def calculate_shift(tokens: int, cfg, max_shift: float = 1.15) -> float:
    """diffusers' ``calculate_shift``: ``mu`` linear in the image token count between the scheduler config's end points."""
    base, top = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    low, high = cfg.get("base_shift", 0.5), cfg.get("max_shift", max_shift)
    slope = (high - low) / (top - base)
    return tokens * slope + (low - slope * base)


class SD3Model(DiffusersModel):
    family = "sd3"
    paper_lr = 0.025
    prediction = "flow"
    stock_sampler = "FlowMatchEulerDiscreteScheduler"

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        if "FlowMatch" not in type(pipe.scheduler).__name__:
            raise InversaError(f"unsupported transformer pipeline with {type(pipe.scheduler).__name__}; "
                               f"supported: {SUPPORTED}")
        super().__init__(pipe, name, embedded_guidance)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return getattr(pipe, "transformer", None) is not None

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        out = self.pipeline_prompt(prompts)
        return Embeds(out[0].float(), out[2].float())

    def shift_mu(self, shape: tuple[int, ...] | None) -> float | None:
        """The resolution-dependent shift of ``use_dynamic_shifting`` configs, as the SD3 pipeline computes it."""
        cfg = self.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return None
        h, w = shape[-2:] if shape is not None else (self.default_size() // self.vae_scale,) * 2
        return calculate_shift((h // self.latent_multiple) * (w // self.latent_multiple), cfg, max_shift=1.16)

    def noise_levels(self, steps: int, spacing: str | None, shape=None) -> Schedule:
        sched, mu = self.stock_scheduler(), self.shift_mu(shape)
        sched.set_timesteps(steps, **({"mu": mu} if mu is not None else {}))
        return flow_levels(sched, mu)

    def linspace_levels(self, steps: int, mu: float | None, show_mu: bool) -> Schedule:
        """The newer flow pipelines' grid: sigmas ``linspace(1, 1/N, N)`` passed to the stock scheduler with ``mu``
        (``show_mu``: whether the label names it)."""
        sched = self.stock_scheduler()
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
        return flow_levels(sched, mu if show_mu else None)

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom") -> Schedule:
        ts = torch.as_tensor(timesteps, dtype=torch.float64)
        s = torch.cat([ts / self.train_steps(), torch.zeros(1, dtype=torch.float64)])
        return Schedule(ts, 1.0 - s, s, spacing)

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        tt = torch.full((x.shape[0],), float(t), device=self.device, dtype=self.dtype)
        return self.net(hidden_states=x, timestep=tt, encoder_hidden_states=self.on_device(embeds.hidden),
                        pooled_projections=self.on_device(embeds.pooled), return_dict=False)[0]
