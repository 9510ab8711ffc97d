"""HiDream-I1: a sparse mixture-of-experts flow DiT on four text encoders, as HiDreamImagePipeline runs it.

| code | HiDreamImagePipeline | meaning |
|---|---|---|
| ``Embeds.hidden`` | ``prompt_embeds_t5`` + ``prompt_embeds_llama3`` | T5's states, then every Llama-3 layer's states laid end to end, zero-padded to one width; ``network`` splits them |
| ``Embeds.pooled`` | ``pooled_prompt_embeds`` | the two CLIPs' projected pooled vectors, concatenated |
| ``shift_mu`` | ``calculate_shift(transformer.max_seq)`` | a fixed ``mu`` of the largest patch grid, whatever the image (ignored by a static-shift config) |
| ``-net(...)`` | ``noise_pred = -noise_pred`` | its output points from noise to image |

Latents are not packed: ``pipe(prompt, latents=inv.x_T, height=H, width=W)``. The call rescales
``height`` x ``width`` to the area ``(default_sample_size * vae_scale)^2`` (1024^2) and checks the
latent's shape against it, so a stock replay needs an image of that area.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.models.diffusers.hunyuandit import widen
from inversa.models.diffusers.sd3 import SD3Model


class HiDreamModel(SD3Model):
    family = "hidream"
    max_sequence_length = 128  # the call's default (T5, Llama and CLIP are all padded to it)
    injection_refusal = ("HiDream's blocks run their own attention (separate text projections, MoE feed-forward) "
                         "that neither key/value sharing nor map injection reproduces; use cross_replace=0 "
                         "self_replace=0 or flowedit")
    embeddings_unreplayable = "its prompt is T5 and Llama-3 states that one embedding tensor cannot replace"

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        if "FlowMatch" not in type(pipe.scheduler).__name__:
            raise InversaError(f"unsupported HiDream scheduler {type(pipe.scheduler).__name__}: UniPC's corrector "
                               "has no exact inverse; load it with FlowMatchEulerDiscreteScheduler (I1-Dev/Fast)")
        super().__init__(pipe, name, embedded_guidance)

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "HiDreamImageTransformer2DModel"

    # text -----------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            t5, _, llama, _, pooled, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device,
                                                                 do_classifier_free_guidance=False,
                                                                 max_sequence_length=self.max_sequence_length)
        layers, n, length, width = llama.shape
        llama = llama.permute(1, 0, 2, 3).reshape(n, layers * length, width)
        wide = max(t5.shape[-1], width)
        hidden = torch.cat([widen(t5, wide), widen(llama.to(t5), wide)], 1)
        return Embeds(hidden.to(self.work_dtype), pooled.to(self.work_dtype))

    def split(self, embeds: Embeds) -> tuple[Tensor, Tensor]:
        """(T5 states (B, L, D5), Llama states (layers, B, L, Dl)) from :meth:`encode_prompt`'s packing."""
        hidden = self.on_device(embeds.hidden)
        t5_len = min(self.max_sequence_length, self.pipe.tokenizer_3.model_max_length)
        layers = self.pipe.text_encoder_4.config.num_hidden_layers
        t5 = hidden[:, :t5_len, :self.pipe.text_encoder_3.config.d_model]
        llama = hidden[:, t5_len:, :self.pipe.text_encoder_4.config.hidden_size]
        n, total, width = llama.shape
        return t5, llama.reshape(n, layers, total // layers, width).permute(1, 0, 2, 3)

    # schedule -------------------------------------------------------------
    def shift_mu(self, shape) -> float:
        from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift

        return float(calculate_shift(self.net.max_seq))

    # network --------------------------------------------------------------
    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        t5, llama = self.split(embeds)
        tt = torch.full((x.shape[0],), float(t), device=self.device, dtype=torch.float32)  # the scheduler's float32 t
        out = self.net(hidden_states=x, timesteps=tt, encoder_hidden_states_t5=t5, encoder_hidden_states_llama3=llama,
                       pooled_embeds=self.on_device(embeds.pooled), return_dict=False)[0]
        return -out
