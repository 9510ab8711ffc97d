"""Chroma: FLUX.1's layout without CLIP or guidance embedding, a T5 prompt whose padding is masked, plain CFG.

| code | ChromaPipeline | meaning |
|---|---|---|
| ``flux.pack`` / ``flux.image_ids`` | ``_pack_latents`` / ``_prepare_latent_image_ids`` | FLUX.1's 2x2 tokens and rope ids |
| ``Embeds.pooled`` | ``prompt_attention_mask`` | T5 tokens kept: the prompt and its first padding token |
| ``text_mask(...)`` | ``_prepare_attention_mask`` | that mask extended by ones over the image tokens |
| ``Condition.guidance`` | ``guidance_scale`` | CFG against ``negative_prompt`` (empty by default) |

The shift ``mu`` is FLUX.1's (the scheduler ignores it unless ``use_dynamic_shifting``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds
from inversa.models.diffusers.flux import FluxModel, image_ids, pack, unpack


def text_mask(mask: Tensor, image_tokens: int) -> Tensor:
    """The transformer's joint mask: the text mask (float), then ones for every image token, as the pipeline builds it."""
    return torch.cat([mask, torch.ones(mask.shape[0], image_tokens, device=mask.device, dtype=torch.bool)], dim=1)


class ChromaModel(FluxModel):
    family = "chroma"
    packs_latents = True
    stock_callback_refusal = ("it takes packed latents and guides with the call's guidance_scale, which a step-end "
                              "callback cannot change; a plain x_T replays as pipe(prompt, "
                              "latents=inversa.models.diffusers.flux.pack(inv.x_T))")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "ChromaTransformer2DModel"

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            out = self.pipe.encode_prompt(prompt=prompts, device=self.device, do_classifier_free_guidance=False,
                                          max_sequence_length=self.max_sequence_length)
        hidden, mask = out[0], out[2]
        return Embeds(hidden.to(self.work_dtype), mask.to(self.work_dtype))

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, h, w = x.shape
        hidden = self.on_device(embeds.hidden)
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000  # the stock loop's t / 1000
        out = self.net(hidden_states=pack(x), timestep=tt, encoder_hidden_states=hidden,
                       txt_ids=hidden.new_zeros(hidden.shape[1], 3), img_ids=self.on_device(image_ids(h // 2, w // 2)),
                       attention_mask=text_mask(self.on_device(embeds.pooled), (h // 2) * (w // 2)),
                       return_dict=False)[0]
        return unpack(out, h, w)
