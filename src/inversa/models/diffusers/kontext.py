"""FLUX.1 Kontext: FLUX.1 whose tokens are followed by a reference image's tokens, as FluxKontextPipeline runs it.

| code | FluxKontextPipeline | meaning |
|---|---|---|
| ``reference`` (B, C, h, w) | ``image`` (as a latent) / ``image_latents`` | the image the instruction edits, encoded like any latent |
| ``reference_ids`` | ``image_ids`` | FLUX.1's rope ids with the first coordinate set to 1 |
| ``out[:, :tokens]`` | ``noise_pred[:, :latents.size(1)]`` | only the generated tokens' velocity is stepped |

The inversion is conditioned on the reference, so the stock pipeline given the same
reference (``pipe(image=reference, latents=pack(x_T))``) regenerates the image, and an
instruction edit samples that ``x_T`` with another prompt and the same reference. The
reference is the one state a Kontext model keeps: :meth:`KontextModel.set_reference` pins
it; until then every image :meth:`encode` sees is its own reference (invert an image, then
reconstruct or edit it: the instruction-editing flow).
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.models.diffusers.flux import FluxModel, image_ids, pack, unpack


def reference_ids(rows: int, cols: int) -> Tensor:
    """The reference tokens' rope ids: (1, row, col), the generated image's being (0, row, col)."""
    ids = image_ids(rows, cols)
    ids[:, 0] = 1
    return ids


class KontextModel(FluxModel):
    family = "flux-kontext"
    packs_latents = True
    stock_callback_refusal = ("it takes packed latents and the reference image, which stock_callback does not pass; a "
                              "plain x_T replays as pipe(image=model.reference, prompt=..., "
                              "latents=inversa.models.diffusers.flux.pack(inv.x_T))")

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        super().__init__(pipe, name, embedded_guidance)
        self.reference: Tensor | None = None
        self.pinned = False

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(pipe).__name__ == "FluxKontextPipeline"

    def set_reference(self, images: Tensor | None) -> "KontextModel":
        """Pin the reference to ``images`` in [-1, 1] (B, 3, H, W); None unpins (each encoded image is its own)."""
        self.pinned = images is not None
        self.reference = None if images is None else super().encode(images)
        return self

    def encode(self, images: Tensor) -> Tensor:
        z = super().encode(images)
        if not self.pinned:
            self.reference = z
        return z

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        if self.reference is None:
            raise InversaError("FLUX.1 Kontext needs its reference image: encode or invert an image first, "
                               "or call model.set_reference(images)")
        n, _, h, w = x.shape
        ref = self.reference
        if n % ref.shape[0]:
            raise InversaError(f"{ref.shape[0]} reference images for a batch of {n}")
        ref = ref.repeat(n // ref.shape[0], 1, 1, 1)  # batches are blocks of the B images, in order
        rh, rw = ref.shape[-2:]
        hidden = self.on_device(embeds.hidden)
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000
        guidance = (torch.full((n,), self.embedded_guidance, device=self.device, dtype=torch.float32)
                    if self.net.config.guidance_embeds else None)
        ids = torch.cat([image_ids(h // 2, w // 2), reference_ids(rh // 2, rw // 2)])
        out = self.net(hidden_states=torch.cat([pack(x), self.on_device(pack(ref))], dim=1), timestep=tt,
                       guidance=guidance, pooled_projections=self.on_device(embeds.pooled), encoder_hidden_states=hidden,
                       txt_ids=hidden.new_zeros(hidden.shape[1], 3), img_ids=self.on_device(ids), return_dict=False)[0]
        return unpack(out[:, :(h // 2) * (w // 2)], h, w)
