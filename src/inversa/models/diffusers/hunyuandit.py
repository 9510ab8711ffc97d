"""HunyuanDiT: a skip-connected cross-attention DiT on BERT + mT5 text, v-prediction DDPM, as HunyuanDiTPipeline runs it.

| code | HunyuanDiTPipeline | meaning |
|---|---|---|
| ``stock_scheduler()`` | ``DDPMScheduler`` (v-prediction) | DDIM (eta 0) from the pipeline's DDPM config: the same leading grid, ending at alpha = 1 as DDPM does |
| ``Embeds.hidden`` | ``prompt_embeds`` + ``prompt_embeds_2`` | BERT's 77 states then mT5's 256, zero-padded to one width; ``network`` splits them |
| ``Embeds.pooled`` | both attention masks | concatenated in the same order |
| ``rotary(h, w)`` | ``get_2d_rotary_pos_embed`` | the image grid's rope, cropped from a 512 px base grid |
| ``image_meta`` | ``add_time_ids``, ``style`` | ``original_size`` (1024, 1024), ``target_size`` = the image, crop (0, 0); style 0 |
| ``out[:, :C]`` | ``noise_pred.chunk(2, dim=1)[0]`` | the learned-sigma half is dropped |

A plain ``x_T`` replays as ``pipe(prompt, latents=inv.x_T, scheduler=stock_scheduler(pipe), height=H, width=W,
use_resolution_binning=False)``; POLARIS scales and Direct offsets replay through ``stock_callback``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds
from inversa.models.diffusers.sd import SDModel

ORIGINAL_SIZE = (1024, 1024)  # the call's default original_size
CROP = (0, 0)  # the call's default crops_coords_top_left


def widen(x: Tensor, width: int) -> Tensor:
    """``x`` (B, L, D) zero-padded to ``width`` channels."""
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


class HunyuanDiTModel(SDModel):
    family = "hunyuandit"
    injection_refusal = ("HunyuanDiT's attention applies QK-norm and a 2-D rope inside its processor, which the "
                         "map-injecting processor does not reproduce; use cross_replace=0 self_replace=0 or flowedit")
    embeddings_unreplayable = ("its prompt is two encoders' states (BERT and mT5) that the step-end callback "
                               "replaces separately")

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "HunyuanDiT2DModel"

    # text -----------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Embeds:
        """BERT (77 tokens) and mT5 (256 tokens) states as the call encodes them, in one padded tensor."""
        parts = []
        with torch.no_grad():
            for index, length in ((0, self.net.config.text_len), (1, self.net.config.text_len_t5)):
                hidden, _, mask, _ = self.pipe.encode_prompt(prompts, device=self.device, dtype=self.dtype,
                                                             do_classifier_free_guidance=False,
                                                             max_sequence_length=length, text_encoder_index=index)
                parts.append((hidden.to(self.work_dtype), mask.to(hidden.device, self.work_dtype)))
        width = max(h.shape[-1] for h, _ in parts)
        return Embeds(torch.cat([widen(h, width) for h, _ in parts], 1), torch.cat([m for _, m in parts], 1))

    def split(self, embeds: Embeds) -> dict:
        """The transformer's four text inputs from :meth:`encode_prompt`'s packing."""
        cfg, cut = self.net.config, self.net.config.text_len
        hidden, mask = self.on_device(embeds.hidden), embeds.pooled.to(self.device, torch.long)
        return {"encoder_hidden_states": hidden[:, :cut, :cfg.cross_attention_dim], "text_embedding_mask": mask[:, :cut],
                "encoder_hidden_states_t5": hidden[:, cut:, :cfg.cross_attention_dim_t5].contiguous(),
                "text_embedding_mask_t5": mask[:, cut:]}

    # network --------------------------------------------------------------
    def rotary(self, rows: int, cols: int):
        """The pipeline's 2-D rope for a ``rows`` x ``cols`` patch grid (base grid: 512 px)."""
        from diffusers.models.embeddings import get_2d_rotary_pos_embed
        from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

        base = 512 // 8 // self.net.config.patch_size
        crop = get_resize_crop_region_for_grid((rows, cols), base)
        return get_2d_rotary_pos_embed(self.net.inner_dim // self.net.num_heads, crop, (rows, cols),
                                       device=self.device, output_type="pt")

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n, _, h, w = x.shape
        p = self.net.config.patch_size
        size = (h * self.vae_scale, w * self.vae_scale)
        meta = torch.tensor([ORIGINAL_SIZE + size + CROP], dtype=self.dtype, device=self.device).repeat(n, 1)
        tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype)  # the loop's t, in the latent dtype
        out = self.net(x, tt, image_meta_size=meta, style=torch.zeros(n, dtype=torch.long, device=self.device),
                       image_rotary_emb=self.rotary(h // p, w // p), return_dict=False, **self.split(embeds))[0]
        return out[:, :x.shape[1]]  # the learned-sigma half is dropped
