"""SANA: a linear-attention DiT on a deep-compression autoencoder (DC-AE), sampled by Flow-DPM-Solver.

| code | SanaPipeline | meaning |
|---|---|---|
| ``stock_scheduler()`` | ``DPMSolverMultistepScheduler`` (``use_flow_sigmas``) | the pipeline's own config at ``solver_order=1``: first-order DPM-Solver++ on the flow levels *is* the flow Euler step, on the same shifted grid |
| ``noise_levels`` | ``set_timesteps`` | sigmas ``shift(linspace(1 - 1/1000, 0, N + 1))[:-1]`` (``flow_shift``) then the final sigma |
| network time | ``t * timestep_scale`` | the scheduler's integer timestep ``int(1000 sigma)``, while the step uses sigma itself |
| ``Embeds.pooled`` | ``prompt_attention_mask`` | the Gemma tokens' mask, kept beside the states (the transformer needs it) |
| ``complex_human_instruction`` | same | prepended to the prompt (not to the negative) by the pipeline's ``__call__`` |

A stock replay is ``pipe(prompt, latents=inv.x_T, scheduler=stock_scheduler(pipe), height=H, width=W,
use_resolution_binning=False)``: the step count is the user's as usual, nothing else changes.
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.base import DiffusersModel


class SanaModel(DiffusersModel):
    family = "sana"
    prediction = "flow"
    stock_sampler = "DPMSolverMultistepScheduler"
    max_sequence_length = 300  # SanaPipeline's default
    embeddings_unreplayable = ("its call refuses negative_prompt_embeds beside a prompt and needs their attention "
                               "mask, so per-step embeddings cannot go in")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        if type(pipe).__name__.startswith("SanaSprint"):
            raise InversaError(f"unsupported pipeline {type(pipe).__name__}: SANA-Sprint's SCMScheduler draws fresh "
                               "noise at every step, so no deterministic trajectory ends at its images; "
                               "use SanaPipeline")
        cfg = pipe.scheduler.config
        if not cfg.get("use_flow_sigmas") or cfg.get("prediction_type") != "flow_prediction":
            raise InversaError(f"unsupported SANA scheduler {type(pipe.scheduler).__name__}: expected "
                               "DPMSolverMultistepScheduler with use_flow_sigmas and flow_prediction (Flow-DPM-Solver)")
        super().__init__(pipe, name, embedded_guidance)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "SanaTransformer2DModel"

    def encode(self, images: Tensor) -> Tensor:
        """DC-AE encodes to a plain latent (no distribution), scaled by ``scaling_factor``."""
        self.check_size(images.shape[-2], images.shape[-1])
        with torch.no_grad():
            z = self.vae.encode(images.to(self.device, self.vae.dtype)).latent
        return z.to(self.work_dtype) * self.vae.config.scaling_factor

    # text -----------------------------------------------------------------
    def _encode(self, prompts: list[str], instruction) -> Embeds:
        with torch.no_grad():
            hidden, mask, _, _ = self.pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=self.device,
                                                         max_sequence_length=self.max_sequence_length,
                                                         complex_human_instruction=instruction)
        return Embeds(hidden.to(self.work_dtype), mask.to(self.work_dtype))

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        """As ``__call__`` encodes the prompt: with its default complex human instruction prepended."""
        default = inspect.signature(self.pipe.__call__).parameters["complex_human_instruction"].default
        return self._encode(prompts, default)

    def encode_negative(self, prompts: list[str]) -> Embeds:
        """The pipeline encodes the negative prompt without the instruction."""
        return self._encode(prompts, None)

    # schedule -------------------------------------------------------------
    def stock_scheduler(self, spacing: str | None = None):
        """The pipeline's Flow-DPM-Solver config at first order: exactly flow Euler on its own sigma grid."""
        return self.scheduler_from_config(solver_order=1, algorithm_type="dpmsolver++", thresholding=False,
                                          euler_at_final=False)

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        if not 1 <= steps <= self.train_steps():
            raise InversaError(f"steps must be between 1 and {self.train_steps()}, got {steps}")
        sched = self.stock_scheduler()
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.double()
        return Schedule(sched.timesteps.double(), 1.0 - sigmas, sigmas, f"flow-dpm(shift={sched.config.flow_shift})")

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom") -> Schedule:
        ts = torch.as_tensor(timesteps, dtype=torch.float64)
        s = torch.cat([ts / self.train_steps(), torch.zeros(1, dtype=torch.float64)])
        return Schedule(ts, 1.0 - s, s, spacing)

    # network --------------------------------------------------------------
    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        # as the stock loop: the integer timestep times timestep_scale, in float32
        tt = torch.full((x.shape[0],), float(t), device=self.device) * self.net.config.timestep_scale
        out = self.net(x, encoder_hidden_states=self.on_device(embeds.hidden),
                       encoder_attention_mask=embeds.pooled.to(self.device), timestep=tt, return_dict=False)[0]
        return out[:, :x.shape[1]]  # a learned-sigma head's second half is dropped, as the pipeline does
