"""CogVideoX (``CogVideoXPipeline``): a v-prediction video transformer on a zero-terminal-SNR DDIM schedule.

| code | CogVideoXPipeline | meaning |
|---|---|---|
| ``(B, C, F, H, W)`` | ``(B, F, C, H, W)`` | the pipeline's latents are frame-major; :func:`to_pipeline` permutes |
| ``normalise(z)`` | ``z * scaling_factor`` | one scale, no shift |
| ``stock_scheduler()`` | ``CogVideoXDDIMScheduler`` | eta 0; ``snr_shift_scale`` and the zero-SNR rescale live in its ``alphas_cumprod`` |
| ``rotary(...)`` | ``_prepare_rotary_positional_embeddings`` | 3D rope of the latent grid, when the transformer uses it |

The causal VAE decodes an even number of latent frames to ``4n`` frames (it keeps a first
frame only when the count is odd), so clips that come back whole have ``8k + 1`` frames (49 for
CogVideoX-2b/5b). The DDIM step goes from ``t`` to ``t - 1000 // N``: with trailing spacing
choose N dividing 1000 (as the default 50 does), or the stock sampler's levels drift from its timesteps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import SPACINGS, Embeds
from inversa.models.diffusers.sd import SDModel
from inversa.models.diffusers.video import VideoMixin


def to_pipeline(x: Tensor) -> Tensor:
    """inversa's (B, C, F, H, W) latents as ``CogVideoXPipeline(latents=...)`` takes them, (B, F, C, H, W)."""
    return x.permute(0, 2, 1, 3, 4)


from_pipeline = to_pipeline  # the same swap of dims 1 and 2


class CogVideoXModel(VideoMixin, SDModel):
    family = "cogvideox"
    fps = 8.0  # what the pipeline's examples export at
    stock_sampler = "CogVideoXDDIMScheduler"

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.temporal = int(pipe.vae_scale_factor_temporal)
        if self.net.config.get("patch_size_t") or self.net.config.get("ofs_embed_dim"):
            raise InversaError("unsupported CogVideoX variant (1.5 temporal patches or image-to-video offsets); "
                               "supported: CogVideoX 1.0 text-to-video (2b, 5b)")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(pipe).__name__ == "CogVideoXPipeline"

    def default_size(self) -> int:
        return int(self.net.config.sample_height) * self.vae_scale  # the pipeline's default height

    def frame_step(self) -> int:
        return 2 * self.temporal  # an even latent count would decode to 4n frames

    @property
    def max_sequence_length(self) -> int:
        return int(self.net.config.max_text_seq_length)

    def normalise(self, z: Tensor) -> Tensor:
        return z * self.vae.config.scaling_factor

    def denormalise(self, latents: Tensor) -> Tensor:
        return latents / self.vae.config.scaling_factor

    def stock_scheduler(self, spacing: str | None = None):
        if spacing is not None and spacing not in SPACINGS:
            raise InversaError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
        over = {"clip_sample": False, "thresholding": False, **({"timestep_spacing": spacing} if spacing else {})}
        return self.scheduler_from_config(**over)

    def rotary(self, frames: int, height: int, width: int):
        """The pipeline's own 3D rope for a latent grid, or None when the transformer has learned positions."""
        if not self.net.config.use_rotary_positional_embeddings:
            return None
        cos, sin = self.pipe._prepare_rotary_positional_embeddings(height * self.vae_scale, width * self.vae_scale,
                                                                   frames, self.device)
        return cos.to(self.device), sin.to(self.device)

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, f, h, w = x.shape
        tt = torch.full((n,), int(round(float(t))), device=self.device, dtype=torch.long)
        out = self.net(hidden_states=to_pipeline(x), encoder_hidden_states=self.on_device(embeds.hidden), timestep=tt,
                       image_rotary_emb=self.rotary(f, h, w), return_dict=False)[0]
        return from_pipeline(out)
