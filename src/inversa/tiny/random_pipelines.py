"""Tiny random-weight pipelines of every supported family, built from config.

Tests and benchmarks save them to a folder and load them back through the same
``from_pretrained`` path as a hub model, so no weights are ever downloaded.
"""
from __future__ import annotations

import os
import tempfile

import torch

from inversa.core.errors import InversaError
from inversa.tiny.flow_pipelines import FLOW_FAMILIES
from inversa.tiny.flow_pipelines import build as build_flow
from inversa.tiny.parts import random_flux, random_text_encoder, random_unet, random_vae
from inversa.tiny.random_video import VIDEO, build_video
from inversa.tiny.vocab import make_tokenizer

FAMILIES = ("sd", "sd2v", "sdxl", "lcm", "sd3", "flux")
DIT = ("sana", "pixart", "hunyuandit")  # cross-attention DiTs (tiny/dit_pipelines.py), tested in test_families_dit.py and test_families3.py
VARIANTS = FAMILIES + ("flux-schnell",) + FLOW_FAMILIES + DIT + VIDEO  # buildable too, kept out of the per-family test matrix


def build_pipeline(family: str, seed: int = 0):
    """A tiny random pipeline of ``family`` (one of :data:`VARIANTS`); 64x64 images, 32x32 latents."""
    import diffusers as d

    if family in FLOW_FAMILIES:
        return build_flow(family, seed)
    tmp = tempfile.mkdtemp(prefix="inversa-tok-")
    tok = make_tokenizer(tmp)
    vp = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
              set_alpha_to_one=False, steps_offset=1)
    if family in ("sd", "sd2v"):
        sched = d.DDIMScheduler(**vp, prediction_type="v_prediction" if family == "sd2v" else "epsilon")
        return d.StableDiffusionPipeline(vae=random_vae(seed), text_encoder=random_text_encoder(tok, seed=seed), tokenizer=tok,
                                         unet=random_unet(seed), scheduler=sched, safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False)
    if family == "lcm":
        sched = d.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                               set_alpha_to_one=True, steps_offset=1, original_inference_steps=50)
        return d.LatentConsistencyModelPipeline(vae=random_vae(seed), text_encoder=random_text_encoder(tok, seed=seed),
                                                tokenizer=tok, unet=random_unet(seed, time_cond_proj_dim=32),
                                                scheduler=sched, safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False)
    if family == "sdxl":
        unet = random_unet(seed, cross=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=6 * 8 + 32, use_linear_projection=True)
        sched = d.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading")
        return d.StableDiffusionXLPipeline(vae=random_vae(seed), text_encoder=random_text_encoder(tok, seed=seed),
                                           text_encoder_2=random_text_encoder(tok, projection=32, seed=seed + 1),
                                           tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=sched)
    if family == "sd3":
        torch.manual_seed(seed)
        net = d.SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                                      attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                      caption_projection_dim=32, pooled_projection_dim=64).eval()
        vae = random_vae(seed, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)
        return d.StableDiffusion3Pipeline(transformer=net, scheduler=d.FlowMatchEulerDiscreteScheduler(shift=3.0),
                                          vae=vae, text_encoder=random_text_encoder(tok, projection=32, seed=seed),
                                          tokenizer=tok, text_encoder_2=random_text_encoder(tok, projection=32, seed=seed + 1),
                                          tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    if family in ("flux", "flux-schnell"):
        return random_flux(tok, seed, schnell=family == "flux-schnell")
    if family in DIT:
        from inversa.tiny.dit_pipelines import build

        return build(family, seed)
    if family in VIDEO:
        return build_video(family, seed)
    raise InversaError(f"unknown family {family!r}; expected one of {VARIANTS}")


def save_pipeline(family: str, folder: str | None = None, seed: int = 0) -> str:
    """Build a tiny ``family`` pipeline and save it as a diffusers folder; returns the folder."""
    folder = folder or os.path.join(tempfile.mkdtemp(prefix="inversa-"), family)
    build_pipeline(family, seed).save_pretrained(folder)
    return folder
