"""FLUX.1 (dev and schnell): a flow transformer on 2x2-packed latent tokens, as diffusers' FluxPipeline runs it.

| code | FluxPipeline | meaning |
|---|---|---|
| ``pack(x)`` | ``_pack_latents`` | (B, C, H, W) -> (B, H/2 * W/2, 4C) tokens; methods never see tokens |
| ``image_ids(h, w)`` | ``_prepare_latent_image_ids`` | rope position (0, row, col) of each token |
| ``shift_mu(shape)`` | ``calculate_shift`` | ``mu``, linear in the token count (0.5 at 256 to 1.15 at 4096) |
| ``embedded_guidance`` | ``guidance_scale`` | FLUX.1-dev's distilled guidance input (schnell has none) |
| ``Condition.guidance`` | ``true_cfg_scale`` | true classifier-free guidance against a negative prompt |

Sigmas are ``linspace(1, 1/N, N)`` shifted by ``mu`` of the image being inverted, through a
fresh copy of the pipeline's own scheduler, so inversion and the stock sampler walk one grid;
the network gets that grid's ``timestep / 1000``, never an unshifted ``i / N``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd3 import SD3Model


def pack(x: Tensor) -> Tensor:
    """Latents (B, C, H, W) as FLUX tokens (B, H/2 * W/2, 4C): what ``FluxPipeline(latents=...)`` expects."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`pack` for a latent of ``height`` x ``width``."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def image_ids(rows: int, cols: int) -> Tensor:
    """Rope positions (0, row, col) of a ``rows`` x ``cols`` token grid, row-major like :func:`pack`."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([torch.zeros_like(r), r, c], dim=-1).reshape(rows * cols, 3).float()


class FluxModel(SD3Model):
    """FluxPipeline: T5 tokens + pooled CLIP, packed latents, resolution-dependent shift, distilled guidance."""

    family = "flux"
    max_sequence_length = 512  # FluxPipeline's default T5 length (the stock call must match it)
    default_embedded_guidance = 3.5
    stock_label = "FLUX"
    packs_latents = True
    stock_callback_refusal = ("stock_callback does not drive FluxPipeline; for ddim, fixed_point and preciseinv "
                              "call pipe(prompt, latents=inversa.models.diffusers.flux.pack(inv.x_T), ...)")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        if self.net.config.in_channels != 4 * self.vae.config.latent_channels:
            raise InversaError(f"unsupported FLUX pipeline {type(pipe).__name__}: its transformer takes extra "
                               f"conditioning channels (Fill/Control); supported: FluxPipeline, FluxImg2ImgPipeline")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "FluxTransformer2DModel"

    @property
    def latent_multiple(self) -> int:
        return 2  # 2x2 packing

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                        max_sequence_length=self.max_sequence_length)
        return Embeds(hidden.to(self.work_dtype), pooled.to(self.work_dtype))

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        """FluxPipeline's grid: ``linspace(1, 1/N, N)`` shifted by ``mu`` of this latent's token count."""
        return self.linspace_levels(steps, self.shift_mu(shape), show_mu=True)

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, h, w = x.shape
        hidden = self.on_device(embeds.hidden)
        # as the stock loop: timestep / 1000 in the latent dtype; the transformer scales it back by 1000
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000
        guidance = (torch.full((n,), self.embedded_guidance, device=self.device, dtype=torch.float32)
                    if self.net.config.guidance_embeds else None)
        out = self.net(hidden_states=pack(x), timestep=tt, guidance=guidance,
                       pooled_projections=self.on_device(embeds.pooled), encoder_hidden_states=hidden,
                       txt_ids=hidden.new_zeros(hidden.shape[1], 3), img_ids=self.on_device(image_ids(h // 2, w // 2)),
                       return_dict=False)[0]
        return unpack(out, h, w)
