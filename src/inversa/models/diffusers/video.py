"""What the video families share: clips ``(B, 3, F, H, W)`` in [-1, 1] and latents ``(B, C, F', H', W')``.

Methods see 5-D latents and treat them like images (the step algebra is elementwise and
every per-sample reduction flattens from dim 1). A family adds its VAE's normalisation,
its frame rule (causal 3D VAEs keep the first frame and compress the rest ``temporal``-fold,
so clips have ``temporal * k + 1`` frames) and its network call.
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds


def call_default(pipe, name: str, fallback):
    """The default of argument ``name`` of ``pipe.__call__`` (what a stock call uses unless told)."""
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    return fallback if param is None or param.default is inspect.Parameter.empty else param.default


class VideoMixin:
    """Clip-level encode/decode, the frame rule and text encoding for video pipelines (put before the base class)."""

    video = True
    temporal = 4  # the VAE's temporal compression
    fps = 16.0  # written clips' frame rate where the input had none (a family sets its pipeline's)

    def frame_step(self) -> int:
        """Valid clips have ``frame_step() * k + 1`` frames (k >= 0)."""
        return self.temporal

    def check_frames(self, frames: int) -> None:
        step = self.frame_step()
        if frames < 1 or (frames - 1) % step:
            below = (frames - 1) // step * step + 1
            raise InversaError(f"a clip of {frames} frames does not fit model {self.name}: its VAE takes "
                               f"{step}k+1 frames (e.g. {max(below, 1)} or {below + step}; use --frames)")

    def default_size(self) -> int:
        return int(call_default(self.pipe, "height", 480))

    def as_clip(self, images: Tensor) -> Tensor:
        """(B, 3, F, H, W); a still image (B, 3, H, W) is a one-frame clip."""
        clip = images[:, :, None] if images.ndim == 4 else images
        if clip.ndim != 5 or clip.shape[1] != 3:
            raise InversaError(f"model {self.name} inverts clips (B, 3, F, H, W); got a tensor {tuple(images.shape)}")
        self.check_frames(clip.shape[2])
        self.check_size(clip.shape[-2], clip.shape[-1])
        return clip

    def encode(self, images: Tensor) -> Tensor:
        clip = self.as_clip(images)
        with torch.no_grad():
            z = self.vae.encode(clip.to(self.device, self.vae.dtype)).latent_dist.mean
        return self.normalise(z.to(self.work_dtype))

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        z = self.denormalise(latents)
        with torch.set_grad_enabled(grad):
            clip = self.vae.decode(z.to(self.device, self.vae.dtype)).sample
        return clip.float() if grad else clip.float().clamp(-1, 1)

    def normalise(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def denormalise(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    # text -----------------------------------------------------------------
    @property
    def max_sequence_length(self) -> int:
        return int(call_default(self.pipe, "max_sequence_length", 226))

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden = self.pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                             num_videos_per_prompt=1, max_sequence_length=self.max_sequence_length,
                                             device=self.device)[0]
        return Embeds(hidden.to(self.work_dtype))
