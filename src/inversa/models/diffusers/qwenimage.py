"""Qwen-Image: an MMDiT flow transformer on 2x2-packed latents of a Wan-style VAE, as QwenImagePipeline runs it.

| code | QwenImagePipeline | meaning |
|---|---|---|
| ``x`` (B, z, H, W) | ``latents`` before ``_pack_latents`` | the VAE latent ``(z - latents_mean) / latents_std``, frame axis dropped |
| ``flux.pack`` | ``_pack_latents`` | the same 2x2 packing as FLUX.1: ``pipe(latents=pack(x_T))`` |
| ``Embeds.pooled`` | ``prompt_embeds_mask`` | which text tokens are real: prompts of a batch are zero-padded to one length |
| ``shift_mu`` | ``calculate_shift`` | ``mu`` linear in the token count, from the scheduler config |
| ``Condition.guidance`` | ``true_cfg_scale`` | true CFG, then each token's guided velocity rescaled to the conditional one's norm |

Text tokens past a prompt's length are masked out of every attention, so padding a
shorter prompt to a longer one's length changes nothing; inversa pads the unconditional
and conditional prompts to one length when they run in one batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Condition, Embeds, Schedule
from inversa.models.diffusers.flux import pack, unpack
from inversa.models.diffusers.sd3 import SD3Model, calculate_shift


def pad_tokens(embeds: Embeds, length: int) -> Embeds:
    """``embeds`` zero-padded (and masked) to ``length`` text tokens."""
    extra = length - embeds.hidden.shape[1]
    if extra <= 0:
        return embeds
    hidden = torch.nn.functional.pad(embeds.hidden, (0, 0, 0, extra))
    return Embeds(hidden, torch.nn.functional.pad(embeds.pooled, (0, extra)))


def token_norms(x: Tensor) -> Tensor:
    """The norm of each packed token's channels (a 2x2 patch of all latent channels), broadcast back to (B, C, H, W)."""
    h, w = x.shape[-2:]
    tokens = pack(x)
    return unpack(tokens.norm(dim=-1, keepdim=True).expand_as(tokens), h, w)


class QwenImageModel(SD3Model):
    """QwenImagePipeline: Qwen2.5-VL text states (template prefix dropped), packed latents, norm-rescaled true CFG."""

    family = "qwenimage"
    max_sequence_length = 1024  # the pipeline's default cap (prompts are not padded to it)
    packs_latents = True
    stock_callback_refusal = ("it takes packed latents and guides with the call's true_cfg_scale, which a step-end "
                              "callback cannot change; a plain x_T replays as pipe(prompt, "
                              "latents=inversa.models.diffusers.flux.pack(inv.x_T))")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "QwenImageTransformer2DModel"

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.vae_scale = 2 ** len(self.vae.temperal_downsample)

    @property
    def latent_multiple(self) -> int:
        return 2  # 2x2 packing

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1).to(like)
        return mean, torch.tensor(cfg.latents_std).view(1, -1, 1, 1).to(like)

    def encode(self, images: Tensor) -> Tensor:
        self.check_size(images.shape[-2], images.shape[-1])
        with torch.no_grad():
            z = self.vae.encode(images[:, :, None].to(self.device, self.vae.dtype)).latent_dist.mode()[:, :, 0]
        mean, std = self._stats(z)
        return ((z - mean) / std).to(self.work_dtype)

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        mean, std = self._stats(latents)
        z = (latents * std + mean)[:, :, None].to(self.device, self.vae.dtype)
        with torch.set_grad_enabled(grad):
            img = self.vae.decode(z).sample[:, :, 0]
        return img.float() if grad else img.float().clamp(-1, 1)

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden, mask = self.pipe.encode_prompt(prompt=prompts, device=self.device,
                                                   max_sequence_length=self.max_sequence_length)
        mask = torch.ones(hidden.shape[:2]) if mask is None else mask
        return Embeds(hidden.to(self.work_dtype), mask.to(hidden.device, self.work_dtype))

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        """The pipeline's grid: ``linspace(1, 1/N, N)`` shifted by ``mu`` of this latent's packed token count."""
        return self.linspace_levels(steps, self.shift_mu(shape), show_mu=True)

    def shift_mu(self, shape) -> float:
        """``calculate_shift`` of the packed token count; the pipeline passes it even without dynamic shifting."""
        h, w = shape[-2:] if shape is not None else (self.default_size() // self.vae_scale,) * 2
        return calculate_shift((h // 2) * (w // 2), self.scheduler.config)

    def predict_parts(self, x: Tensor, t: float, condition: Condition) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        length = max(condition.uncond.hidden.shape[1], condition.cond.hidden.shape[1])
        both = Embeds.cat([pad_tokens(condition.uncond.expand(n), length), pad_tokens(condition.cond.expand(n), length)])
        out = self.forward(torch.cat([x, x]), t, both)
        return out[:n], out[n:]

    rescales_guidance = True

    def rescale_guided(self, guided: Tensor, cond: Tensor) -> Tensor:
        """True CFG as the pipeline does it: each token of ``u + w (c - u)`` rescaled to the norm of ``c``'s."""
        return guided * (token_norms(cond) / token_norms(guided))

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, h, w = x.shape
        mask = embeds.pooled
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000  # the stock loop's t / 1000
        out = self.net(hidden_states=pack(x), timestep=tt, guidance=None, encoder_hidden_states=self.on_device(embeds.hidden),
                       encoder_hidden_states_mask=None if bool(mask.all()) else mask.to(self.device, torch.long),
                       img_shapes=[[(1, h // 2, w // 2)]] * n, return_dict=False)[0]
        return unpack(out, h, w)
