"""``inversa train-tiny --recipe flow``: a tiny SD3 (MMDiT, rectified flow) sibling of the embedded model.

Only the transformer trains: the embedded model's VAE (latents cached as the base recipe does) and
its CLIP text encoder, frozen, are reused as both of SD3's CLIP encoders (``text_projection`` = identity,
so the pooled vector is the encoder's final EOS state); SD3's T5 slot is left empty (the pipeline then
feeds zeros). Loss: flow matching, ``x_s = (1 - s) x0 + s noise``, target ``noise - x0`` (the velocity the
SD3 pipeline integrates), ``s`` logit-normal as SD3's training, shifted by the scheduler's ``shift``;
captions dropped to '' with probability 0.1 for classifier-free guidance; EMA weights saved.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from inversa.tiny.loop import cached_latents, fit, sample_latents, write_info

CONFIGS = {
    "default": dict(num_layers=4, attention_head_dim=32, num_attention_heads=4),
    "test": dict(num_layers=1, attention_head_dim=8, num_attention_heads=2),
}
SHIFT = 3.0


def clip_with_projection(text):
    """The CLIPTextModel ``text`` as a CLIPTextModelWithProjection whose projection is the identity."""
    from transformers import CLIPTextModelWithProjection

    cfg = text.config.to_dict()
    cfg["projection_dim"] = text.config.hidden_size
    out = CLIPTextModelWithProjection(type(text.config).from_dict(cfg))
    out.text_model.load_state_dict(text.state_dict())
    with torch.no_grad():
        out.text_projection.weight.copy_(torch.eye(text.config.hidden_size))
    return out.eval().requires_grad_(False)


def build_pipeline(base_pipe, config: str, seed: int = 0):
    """An SD3 pipeline: a fresh transformer of size ``config`` on ``base_pipe``'s VAE, text encoder and tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    hidden = base_pipe.text_encoder.config.hidden_size
    vae = base_pipe.vae
    vae.register_to_config(shift_factor=0.0)  # SD3's decode adds it
    torch.manual_seed(seed)
    size = base_pipe.unet.config.sample_size
    net = SD3Transformer2DModel(sample_size=size, patch_size=2, in_channels=4, out_channels=4,
                                joint_attention_dim=2 * hidden, caption_projection_dim=CONFIGS[config]["attention_head_dim"]
                                * CONFIGS[config]["num_attention_heads"], pooled_projection_dim=2 * hidden,
                                pos_embed_max_size=size // 2, **CONFIGS[config])
    text = clip_with_projection(base_pipe.text_encoder)
    return StableDiffusion3Pipeline(transformer=net, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), vae=vae,
                                    text_encoder=text, tokenizer=base_pipe.tokenizer, text_encoder_2=text,
                                    tokenizer_2=base_pipe.tokenizer, text_encoder_3=None, tokenizer_3=None)


def flow_loss(pipe, latents, batch: int, scale: float, dropout: float = 0.1):
    """The per-step loss closure for :func:`inversa.tiny.loop.fit`."""
    net = pipe.transformer

    def loss_fn(step, g, ema):
        z0, idx = sample_latents(latents, batch, scale, g)
        captions = [latents[2][i] if keep else "" for i, keep in zip(idx.tolist(),
                                                                    torch.rand(batch, generator=g) >= dropout)]
        with torch.no_grad():
            hidden, _, pooled, _ = pipe.encode_prompt(captions, None, None, do_classifier_free_guidance=False)
        u = torch.sigmoid(torch.randn(batch, generator=g))  # logit-normal
        s = (SHIFT * u / (1 + (SHIFT - 1) * u)).view(-1, 1, 1, 1)
        noise = torch.randn(z0.shape, generator=g)
        x = (1 - s) * z0 + s * noise
        pred = net(hidden_states=x, timestep=s.flatten() * 1000, encoder_hidden_states=hidden,
                   pooled_projections=pooled).sample
        return F.mse_loss(pred, noise - z0)

    return loss_fn


def train(output: str, base: str | None = None, steps: int = 4000, minutes: float | None = None,
          batch_size: int = 16, dataset_size: int = 6000, config: str = "default", seed: int = 0, every: int = 50,
          resume: bool = False, progress: bool = True, lr: float = 5e-4, command: str | None = None) -> str:
    """Train the SD3 sibling of ``base`` (default: the embedded model) into ``output``."""
    from diffusers import StableDiffusionPipeline

    from inversa.tiny import default_model_path

    os.makedirs(output, exist_ok=True)
    base = base or default_model_path()
    base_pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True)
    base_pipe.vae.eval().requires_grad_(False)
    latents = cached_latents(base_pipe.vae, dataset_size, seed, output)
    pipe = build_pipeline(base_pipe, config, seed)
    summary, ema = fit(pipe.transformer, flow_loss(pipe, latents, batch_size, base_pipe.vae.config.scaling_factor),
                       output, "flow", steps, minutes, seed, lr, 0.998, every, resume, progress)
    pipe.transformer = None
    pipe.register_modules(transformer=ema.half())
    pipe.save_pretrained(output)
    params = sum(p.numel() for p in ema.parameters())
    write_info(output, resume, command, dict(recipe="flow", base=base, config=config, seed=seed,
                                              batch_size=batch_size, dataset_size=dataset_size, lr=lr, shift=SHIFT,
                                              transformer_parameters=params, flow=summary,
                                              torch_threads=torch.get_num_threads()))
    return output
