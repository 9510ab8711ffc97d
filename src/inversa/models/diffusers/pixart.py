"""PixArt-Sigma: a cross-attention DiT on T5 text with a learned-sigma head, sampled by DPM-Solver++ (epsilon, VP).

| code | PixArtSigmaPipeline | meaning |
|---|---|---|
| ``stock_scheduler()`` | ``DPMSolverMultistepScheduler`` | the pipeline's own config at ``solver_order=1``: first-order DPM-Solver++ *is* DDIM (eta 0), on the same timestep grid and final level |
| ``noise_levels`` | ``set_timesteps`` | DPM-Solver's grid (``linspace`` spacing drops t = 0; ``final_sigmas_type`` sets the last level), as VP levels ``alpha = 1 / sqrt(1 + s^2)`` |
| ``network(...)[:, :C]`` | ``noise_pred.chunk(2, dim=1)[0]`` | the learned-sigma head's variance half is dropped, as the pipeline does |
| ``Embeds.pooled`` | ``prompt_attention_mask`` | the T5 tokens' mask (prompts padded to ``max_sequence_length``) |

A plain ``x_T`` replays as ``pipe(prompt, latents=inv.x_T, scheduler=stock_scheduler(pipe), height=H, width=W,
use_resolution_binning=False)``. The pipeline takes only the legacy ``callback(step, t, latents)``, so per-step
state (POLARIS scales, Direct offsets, null embeddings) has no stock replay.
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd import SDModel


class PixArtModel(SDModel):
    family = "pixart"
    stock_sampler = "DPMSolverMultistepScheduler"
    max_sequence_length = 300  # T5 length: the call's default (Sigma 300, Alpha 120), read in __init__
    stock_callback_refusal = ("PixArt's pipelines take only the legacy callback(step, t, latents), which cannot "
                              "change the guidance scale, the latents or the prompt embeddings")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        if getattr(pipe.transformer, "use_additional_conditions", False):
            raise InversaError(f"unsupported pipeline {type(pipe).__name__}: PixArt-Alpha 1024's resolution and "
                               "aspect-ratio conditioning is not wired; PixArt-Sigma (and Alpha 256/512) are")
        if not hasattr(pipe.scheduler, "alphas_cumprod"):
            raise InversaError(f"unsupported PixArt scheduler {type(pipe.scheduler).__name__}: expected a "
                               "variance-preserving one (DPMSolverMultistepScheduler, DDIM, ...)")
        super().__init__(pipe, name, embedded_guidance)
        self.max_sequence_length = inspect.signature(pipe.__call__).parameters["max_sequence_length"].default

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "PixArtTransformer2DModel"

    # text -----------------------------------------------------------------
    def clean_caption(self) -> bool:
        """As ``__call__``: its default ``clean_caption=True`` holds only where bs4 and ftfy are installed."""
        from diffusers.utils import is_bs4_available, is_ftfy_available

        default = inspect.signature(self.pipe.__call__).parameters["clean_caption"].default
        return bool(default) and is_bs4_available() and is_ftfy_available()

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden, mask, _, _ = self.pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=self.device,
                                                         clean_caption=self.clean_caption(),
                                                         max_sequence_length=self.max_sequence_length)
        return Embeds(hidden.to(self.work_dtype), mask.to(hidden.device, self.work_dtype))

    # schedule -------------------------------------------------------------
    def stock_scheduler(self, spacing: str | None = None):
        """The pipeline's DPM-Solver++ config at first order: DDIM with eta 0 on its own grid."""
        over = {"timestep_spacing": spacing} if spacing else {}
        return self.scheduler_from_config(solver_order=1, algorithm_type="dpmsolver++", thresholding=False,
                                          euler_at_final=False, **over)

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        if not 1 <= steps <= self.train_steps():
            raise InversaError(f"steps must be between 1 and {self.train_steps()}, got {steps}")
        sched = self.stock_scheduler(spacing)
        sched.set_timesteps(steps)
        # DPM-Solver's sqrt((1 - a) / a), then the final level, turned into VP levels as its step does: in float32
        alphas, sigmas = sched._sigma_to_alpha_sigma_t(sched.sigmas)
        return Schedule(sched.timesteps.double(), alphas.double(), sigmas.double(),
                        f"dpm++1({sched.config.timestep_spacing})")

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom", sched=None) -> Schedule:
        sched = sched or self.stock_scheduler()
        ts = torch.as_tensor(timesteps, dtype=torch.float64).round()
        final = 1.0 if sched.config.final_sigmas_type == "zero" else float(sched.alphas_cumprod[0])
        ac = torch.cat([sched.alphas_cumprod.double()[ts.long()], torch.tensor([final], dtype=torch.float64)])
        return Schedule(ts, ac.sqrt(), (1 - ac).sqrt(), spacing)

    # network --------------------------------------------------------------
    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        tt = torch.full((x.shape[0],), int(round(float(t))), device=self.device, dtype=torch.long)
        out = self.net(x, encoder_hidden_states=self.on_device(embeds.hidden),
                       encoder_attention_mask=embeds.pooled.to(self.device), timestep=tt,
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return out[:, :x.shape[1]]  # a learned-sigma head's second half is dropped, as the pipeline does
