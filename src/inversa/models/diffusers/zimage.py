"""Z-Image: a single-stream flow DiT fed lists of variable-length tensors, as ZImagePipeline runs it.

| code | ZImagePipeline | meaning |
|---|---|---|
| ``1 - t / 1000`` | ``(1000 - t) / 1000`` | Z-Image's time: 0 is noise, 1 the image |
| ``-net(...)`` | ``noise_pred = -noise_pred`` | its output points from noise to image |
| ``Embeds.pooled`` | the prompt's attention mask | Qwen3 states (chat template, thinking on), real tokens only |
| ``w = guidance_scale + 1`` | ``pos + guidance_scale * (pos - neg)`` | the pipeline's scale counts from 0: ``guidance_scale=0`` is no CFG |
| ``shift_mu`` | ``calculate_shift((H/2) (W/2))`` | FLUX.1's ``mu`` of the 2x2 patch count |

Latents are not packed: ``pipe(latents=inv.x_T)``. The stock loop steps in float32 whatever
the model's dtype (it asserts so), which bounds a float64 parity check near float32 rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inversa.core.types import Embeds, Schedule
from inversa.models.diffusers.sd3 import SD3Model, calculate_shift


class ZImageModel(SD3Model):
    family = "zimage"
    max_sequence_length = 512  # the pipeline's default Qwen3 length (padding is dropped before the transformer)
    injection_refusal = ("Z-Image's blocks are single-stream (text and image tokens share one self-attention): "
                         "no joint or cross-attention to inject into; use cross_replace=0 self_replace=0 or flowedit")
    stock_callback_refusal = "it guides with the call's guidance_scale, which a step-end callback cannot change"

    @classmethod
    def accepts(cls, pipe) -> bool:
        return type(getattr(pipe, "transformer", None)).__name__ == "ZImageTransformer2DModel"

    @property
    def latent_multiple(self) -> int:
        return 2

    def default_size(self) -> int:
        return 1024  # the pipeline's default height and width

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        with torch.no_grad():
            rows, _ = self.pipe.encode_prompt(prompt=list(prompts), device=self.device, do_classifier_free_guidance=False,
                                              max_sequence_length=self.max_sequence_length)
        length = max(r.shape[0] for r in rows)
        hidden = torch.stack([torch.nn.functional.pad(r, (0, 0, 0, length - r.shape[0])) for r in rows])
        mask = torch.stack([torch.arange(length, device=hidden.device) < r.shape[0] for r in rows])
        return Embeds(hidden.to(self.work_dtype), mask.to(self.work_dtype))

    def shift_mu(self, shape) -> float:
        h, w = shape[-2:] if shape is not None else (self.default_size() // self.vae_scale,) * 2
        return calculate_shift((h // 2) * (w // 2), self.scheduler.config)

    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        dynamic = self.scheduler.config.get("use_dynamic_shifting")
        return self.linspace_levels(steps, self.shift_mu(shape), show_mu=dynamic)

    def predict_parts(self, x, t, condition):
        from inversa.models.diffusers.qwenimage import pad_tokens

        n = x.shape[0]
        length = max(condition.uncond.hidden.shape[1], condition.cond.hidden.shape[1])
        both = Embeds.cat([pad_tokens(condition.uncond.expand(n), length), pad_tokens(condition.cond.expand(n), length)])
        out = self.forward(torch.cat([x, x]), t, both)
        return out[:n], out[n:]

    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n = x.shape[0]
        t_z = (1000 - torch.full((n,), float(t), device=self.device, dtype=torch.float32)) / 1000  # float32, as stock
        hidden, keep = self.on_device(embeds.hidden), embeds.pooled.to(self.device).bool()
        caps = [hidden[i][keep[i]] for i in range(n)]
        out = self.net(list(x[:, :, None].unbind(0)), t_z, caps, return_dict=False)[0]
        return -torch.stack(out)[:, :, 0]
