"""Tiny random-weight video pipelines (Wan 2.1, CogVideoX, LTX-Video), built from config like the image ones.

32x32 frames, VAE compression 8x spatially and 4x in time: a 5-frame clip has 2 latent frames of 4x4
(CogVideoX takes 8k+1 frames: 9 frames, 3 latent frames). Text lengths are the pipelines' defaults.
Tokenizers are built from a local word list (no download).
"""
from __future__ import annotations

import torch

from inversa.tiny.vocab import make_t5_tokenizer

VIDEO = ("wan", "cogvideox", "ltx")


def _umt5(tokenizer, d_model: int, seed: int):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                     eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return UMT5EncoderModel(cfg).eval()


def _t5(tokenizer, d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval()


def wan(seed: int = 0):
    """WanPipeline (Wan 2.1 text-to-video): UMT5, a 3D causal VAE with per-channel latent statistics, flow shift 3."""
    import diffusers as d

    tok = make_t5_tokenizer()
    torch.manual_seed(seed)
    z = 4
    g = torch.Generator().manual_seed(seed + 7)
    mean = (torch.randn(z, generator=g) * 0.3).tolist()
    std = (1.0 + torch.rand(z, generator=g)).tolist()
    vae = d.AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True], latents_mean=mean, latents_std=std).eval()
    torch.manual_seed(seed)
    net = d.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                  in_channels=z, out_channels=z, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0)
    return d.WanPipeline(tokenizer=tok, text_encoder=_umt5(tok, 32, seed + 1), vae=vae, transformer=net,
                         scheduler=sched)


def cogvideox(seed: int = 0):
    """CogVideoXPipeline (CogVideoX 1.0 layout): T5, 3D VAE, v-prediction DDIM with zero terminal SNR."""
    import diffusers as d

    tok = make_t5_tokenizer()
    torch.manual_seed(seed)
    vae = d.AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                   up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                   latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                   temporal_compression_ratio=4, scaling_factor=1.15258426).eval()
    torch.manual_seed(seed)
    net = d.CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        time_embed_dim=8, text_embed_dim=32, num_layers=2, sample_width=4,
                                        sample_height=4, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
                                        max_text_seq_length=226, use_rotary_positional_embeddings=True).eval()
    sched = d.CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                                     prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                     snr_shift_scale=3.0, timestep_spacing="trailing")
    return d.CogVideoXPipeline(tokenizer=tok, text_encoder=_t5(tok, 32, seed + 1), vae=vae, transformer=net,
                               scheduler=sched)


def ltx(seed: int = 0):
    """LTXPipeline (LTX-Video 0.9): T5, a patchifying 3D VAE (here 8x, 4x in time) with per-channel statistics,
    1x1 tokens, the published scheduler's dynamic shift and ``shift_terminal``."""
    import diffusers as d

    tok = make_t5_tokenizer()
    torch.manual_seed(seed)
    vae = d.AutoencoderKLLTXVideo(latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                  down_block_types=("LTXVideoDownBlock3D",) * 2, layers_per_block=(1, 1, 1),
                                  decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
                                  decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False,) * 3,
                                  downsample_type=("conv", "conv"), upsample_residual=(False, False),
                                  upsample_factor=(1, 1), patch_size=2).eval()
    g = torch.Generator().manual_seed(seed + 7)
    vae.latents_mean.copy_(torch.randn(4, generator=g) * 0.3)
    vae.latents_std.copy_(1.0 + torch.rand(4, generator=g))
    torch.manual_seed(seed)
    net = d.LTXVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                       cross_attention_dim=16, num_layers=2, caption_channels=32).eval()
    sched = d.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=1024,
                                              max_image_seq_len=4096, base_shift=0.95, max_shift=2.05,
                                              shift_terminal=0.1)
    return d.LTXPipeline(tokenizer=tok, text_encoder=_t5(tok, 32, seed + 1), vae=vae, transformer=net,
                         scheduler=sched)


def build_video(family: str, seed: int = 0):
    return {"wan": wan, "cogvideox": cogvideox, "ltx": ltx}[family](seed)
