"""FLUX.2 ([dev] and [klein]): a flow transformer on patchified, batch-normalised latents, as Flux2Pipeline runs it.

| code | Flux2Pipeline / Flux2KleinPipeline | meaning |
|---|---|---|
| ``x`` (B, 4C, H/2, W/2) | ``latents`` before ``_pack_latents`` | the VAE latent, 2x2-patchified, then batch-norm standardised |
| ``to_model_latent`` | ``_encode_vae_image`` | patchify, then ``(z - bn.running_mean) / sqrt(bn.running_var + eps)`` |
| ``tokens(x)`` | ``_pack_latents`` | (B, 4C, h, w) -> (B, h w, 4C), row-major |
| ``latent_ids(h, w)`` | ``_prepare_latent_ids`` | rope position (0, row, col, 0) of each token |
| ``empirical_mu`` | ``compute_empirical_mu`` | the shift, from the token count *and* the step count |
| ``embedded_guidance`` | ``guidance_scale`` ([dev]) | the distilled guidance input; [klein] runs true CFG instead |

The methods see the patchified latent, which is what ``pipe(latents=...)`` takes, so a
plain ``x_T`` replays as ``pipe(prompt, latents=inv.x_T)``; the pipeline's
``output_type="latent"`` returns the raw VAE latent ([klein], which :func:`to_model_latent`
maps back) or the final tokens ([dev], which :func:`untokens` maps back).
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd3 import SD3Model


def patchify(z: Tensor) -> Tensor:
    """Raw VAE latents (B, C, H, W) as (B, 4C, H/2, W/2): each 2x2 patch's channels stacked, channel major."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unpatchify(x: Tensor) -> Tensor:
    """Inverse of :func:`patchify`."""
    b, c4, h, w = x.shape
    return x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


def bn_stats(vae, like: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE's batch-norm mean and standard deviation, shaped (1, 4C, 1, 1) like ``like``."""
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like)
    return mean, std


def to_model_latent(vae, z: Tensor) -> Tensor:
    """A raw VAE latent (what ``output_type="latent"`` returns) in the space the flow runs in."""
    x = patchify(z)
    mean, std = bn_stats(vae, x)
    return (x - mean) / std


def to_vae_latent(vae, x: Tensor) -> Tensor:
    """Inverse of :func:`to_model_latent`: what the VAE decodes."""
    mean, std = bn_stats(vae, x)
    return unpatchify(x * std + mean)


def tokens(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).permute(0, 2, 1)


def untokens(t: Tensor, h: int, w: int) -> Tensor:
    return t.permute(0, 2, 1).reshape(t.shape[0], t.shape[2], h, w)


def latent_ids(h: int, w: int) -> Tensor:
    """(h w, 4) rope coordinates (time, row, col, layer) = (0, row, col, 0), row-major."""
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    zero = torch.zeros_like(r)
    return torch.stack([zero, r, c, zero], dim=-1).reshape(h * w, 4)


def text_ids(length: int) -> Tensor:
    """(length, 4) rope coordinates (0, 0, 0, l) of the text tokens."""
    ids = torch.zeros(length, 4, dtype=torch.long)
    ids[:, 3] = torch.arange(length)
    return ids


def empirical_mu(tokens: int, steps: int) -> float:
    """FLUX.2's shift: two lines fitted at 10 and 200 steps, interpolated in the step count (linear in tokens above 4300)."""
    slope_10, icpt_10 = 8.73809524e-05, 1.89833333
    slope_200, icpt_200 = 0.00016927, 0.45666666
    at_200 = slope_200 * tokens + icpt_200
    if tokens > 4300:
        return float(at_200)
    at_10 = slope_10 * tokens + icpt_10
    per_step = (at_200 - at_10) / 190.0
    return float(per_step * steps + (at_200 - 200.0 * per_step))


class Flux2Model(SD3Model):
    """Flux2Pipeline ([dev]: Mistral-3 text, distilled guidance) and Flux2KleinPipeline (Qwen3 text, true CFG)."""

    family = "flux2"
    max_sequence_length = 512  # the pipelines' default (the stock call must match it)
    stock_callback_refusal = ("it guides with the call's guidance_scale and an empty negative prompt, "
                              "which a step-end callback cannot change")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.vae_scale *= 2  # the 2x2 patchify is part of the latent: one model latent pixel per 2 x 8 image pixels
        self.embedded_guidance = 4.0 if embedded_guidance is None else float(embedded_guidance)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "Flux2Transformer2DModel"

    @property
    def latent_multiple(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return 4 * self.vae.config.latent_channels

    @property
    def guided_by_cfg(self) -> bool:
        """[klein] base runs true CFG against an empty negative; [dev] and distilled [klein] do not."""
        return not self.net.config.guidance_embeds and not self.pipe.config.get("is_distilled", False)

    def default_size(self) -> int:
        return int(self.pipe.default_sample_size) * self.vae_scale // 2

    def encode(self, images: Tensor) -> Tensor:
        self.check_size(images.shape[-2], images.shape[-1])
        with torch.no_grad():
            z = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.mode()
        return to_model_latent(self.vae, z.to(self.work_dtype))

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        z = to_vae_latent(self.vae, latents.to(self.device, self.vae.dtype))
        with torch.set_grad_enabled(grad):
            img = self.vae.decode(z).sample
        return img.float() if grad else img.float().clamp(-1, 1)

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            hidden, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device,
                                                max_sequence_length=self.max_sequence_length)
        return Embeds(hidden.to(self.work_dtype))

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        """The pipelines' grid: ``linspace(1, 1/N, N)`` shifted by ``mu`` of this latent's token count and N."""
        h, w = shape[-2:] if shape is not None else (self.default_size() // self.vae_scale,) * 2
        return self.linspace_levels(steps, empirical_mu(h * w, steps),
                                    show_mu=self.scheduler.config.get("use_dynamic_shifting"))

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, h, w = x.shape
        hidden = self.on_device(embeds.hidden)
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000  # the stock loop's t / 1000
        guidance = (torch.full((n,), self.embedded_guidance, device=self.device, dtype=torch.float32)
                    if self.net.config.guidance_embeds else None)
        out = self.net(hidden_states=tokens(x), encoder_hidden_states=hidden, timestep=tt, guidance=guidance,
                       img_ids=latent_ids(h, w).to(self.device).expand(n, -1, -1),
                       txt_ids=text_ids(hidden.shape[1]).to(self.device).expand(n, -1, -1), return_dict=False)[0]
        return untokens(out[:, :h * w], h, w)
