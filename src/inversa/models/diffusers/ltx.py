"""LTX-Video (``LTXPipeline``): a flow transformer on one token per latent voxel of a 32x, 8x-in-time VAE.

| code | LTXPipeline | meaning |
|---|---|---|
| ``pack(x)`` / ``unpack`` | ``_pack_latents`` / ``_unpack_latents`` | (B, C, F, H, W) <-> tokens (B, F H W, C p_t p p); methods never see tokens |
| ``normalise(z)`` | ``_normalize_latents`` | ``(z - latents_mean) * scaling_factor / latents_std`` per channel |
| ``noise_levels`` | ``sigmas=linspace(1, 1/N, N), mu=calculate_shift(F H W)`` | ``mu`` of the video token count, then the config's ``shift_terminal`` stretch |
| ``rope_scale()`` | ``rope_interpolation_scale`` | ``(temporal / frame_rate, spatial, spatial)`` at the call's default ``frame_rate`` |
| ``Embeds.pooled`` | ``prompt_attention_mask`` | the T5 tokens kept (prompts padded to ``max_sequence_length``) |

What it needs that the others do not: the frame rate enters the network (through the rope), so a
stock call must use the default ``frame_rate`` (25) to replay an inversion; the decoder of LTX 0.9.1+
takes a timestep, which inversa (like the pipeline's default ``decode_timestep=0``) sets to 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd3 import SD3Model, calculate_shift
from inversa.models.diffusers.video import VideoMixin, call_default


def pack(x: Tensor, p: int = 1, pt: int = 1) -> Tensor:
    """Latents (B, C, F, H, W) as LTX tokens (B, F/pt * H/p * W/p, C pt p p): what ``LTXPipeline(latents=...)`` takes."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (f // pt) * (h // p) * (w // p), c * pt * p * p)


def unpack(tokens: Tensor, frames: int, height: int, width: int, p: int = 1, pt: int = 1) -> Tensor:
    """Inverse of :func:`pack` for a latent of ``frames`` x ``height`` x ``width``."""
    b = tokens.shape[0]
    x = tokens.reshape(b, frames // pt, height // p, width // p, -1, pt, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, frames, height, width)


class LTXModel(VideoMixin, SD3Model):
    family = "ltx"
    fps = 25.0  # the pipeline's default frame_rate, which its rope is scaled by
    stock_sampler = "FlowMatchEulerDiscreteScheduler"
    packs_latents = True
    stock_callback_refusal = ("it takes packed latents; a plain x_T replays as pipe(prompt, "
                              "latents=inversa.models.diffusers.ltx.pack(inv.x_T))")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.vae_scale = int(pipe.vae_spatial_compression_ratio)
        self.temporal = int(pipe.vae_temporal_compression_ratio)
        self.patch, self.patch_t = int(self.net.config.patch_size), int(self.net.config.patch_size_t)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(pipe).__name__ == "LTXPipeline"

    def frame_step(self) -> int:
        return self.temporal * self.patch_t

    def default_size(self) -> int:
        return int(call_default(self.pipe, "height", 512))

    @property
    def max_sequence_length(self) -> int:
        return int(call_default(self.pipe, "max_sequence_length", 128))

    def normalise(self, z: Tensor) -> Tensor:
        mean, std = (v.view(1, -1, 1, 1, 1).to(z) for v in (self.vae.latents_mean, self.vae.latents_std))
        return (z - mean) * self.vae.config.scaling_factor / std

    def denormalise(self, latents: Tensor) -> Tensor:
        mean, std = (v.view(1, -1, 1, 1, 1).to(latents) for v in (self.vae.latents_mean, self.vae.latents_std))
        return latents * std / self.vae.config.scaling_factor + mean

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        z = self.denormalise(latents).to(self.device, self.vae.dtype)
        temb = torch.zeros(z.shape[0], device=self.device, dtype=z.dtype) if self.vae.config.timestep_conditioning else None
        with torch.set_grad_enabled(grad):
            clip = self.vae.decode(z, temb).sample
        return clip.float() if grad else clip.float().clamp(-1, 1)

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden, mask, _, _ = self.pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                                         max_sequence_length=self.max_sequence_length,
                                                         device=self.device)
        return Embeds(hidden.to(self.work_dtype), mask.to(hidden.device, self.work_dtype))

    def shift_mu(self, shape: tuple[int, ...] | None) -> float | None:
        """``mu`` of the latent token count, as the pipeline computes it (its default clip: 161 frames, 512x704)."""
        if shape is None:
            frames = (int(call_default(self.pipe, "num_frames", 161)) - 1) // self.temporal + 1
            shape = (frames, self.default_size() // self.vae_scale, int(call_default(self.pipe, "width", 704)) // self.vae_scale)
        f, h, w = shape[-3:] if len(shape) >= 5 else (1, *shape[-2:])
        return calculate_shift(f * h * w, self.scheduler.config)

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        return self.linspace_levels(steps, self.shift_mu(shape), show_mu=True)

    def rope_scale(self) -> tuple[float, float, float]:
        rate = float(call_default(self.pipe, "frame_rate", self.fps))
        return self.temporal / rate, self.vae_scale, self.vae_scale

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, f, h, w = x.shape
        # as the stock loop: the scheduler's float32 timestep, one per sample
        tt = torch.full((n,), float(t), device=self.device, dtype=torch.float32)
        out = self.net(hidden_states=pack(x, self.patch, self.patch_t), encoder_hidden_states=self.on_device(embeds.hidden),
                       timestep=tt, encoder_attention_mask=self.on_device(embeds.pooled), num_frames=f, height=h,
                       width=w, rope_interpolation_scale=self.rope_scale(),
                       return_dict=False)[0]
        return unpack(out, f, h, w, self.patch, self.patch_t)
