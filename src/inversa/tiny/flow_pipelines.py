"""Tiny random pipelines of the flow-matching image families of diffusers 0.42 (FLUX.2, Qwen-Image, Chroma, ...).

Built from config with random weights and locally made tokenizers, like
:mod:`inversa.tiny.random_pipelines` (which dispatches here for these names).
"""
from __future__ import annotations

import torch

from .chat_tokenizer import make_qwen_tokenizer

FLOW_FAMILIES = ("flux2-klein", "qwenimage", "chroma", "kontext", "lumina2", "zimage", "hidream")


def _qwen3(tok, hidden: int = 16, layers: int = 2, seed: int = 0, causal_lm: bool = True):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(cfg).eval()


def _flux2_vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                             norm_num_groups=32, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
                             mid_block_add_attention=False).eval()
    g = torch.Generator().manual_seed(seed)  # non-trivial batch-norm statistics, so the standardisation is tested
    vae.bn.running_mean.copy_(0.3 * torch.randn(16, generator=g))
    vae.bn.running_var.copy_(0.5 + torch.rand(16, generator=g))
    return vae


def flux2_klein(seed: int = 0):
    """Flux2KleinPipeline: Qwen3 text (hidden states of layers 9, 18, 27 stacked: 28 tiny layers), true CFG."""
    import diffusers as d

    tok = make_qwen_tokenizer()
    torch.manual_seed(seed)
    net = d.Flux2Transformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                    num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32,
                                    axes_dims_rope=(2, 2, 2, 2), guidance_embeds=False).eval()
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                              base_image_seq_len=256, max_image_seq_len=4096)
    return d.Flux2KleinPipeline(scheduler=sched, vae=_flux2_vae(seed), text_encoder=_qwen3(tok, layers=28, seed=seed),
                                tokenizer=tok, transformer=net)


BUILDERS = {"flux2-klein": flux2_klein}


def build(family: str, seed: int = 0):
    if family not in BUILDERS:
        raise ValueError(f"no tiny {family!r} pipeline yet; built: {', '.join(BUILDERS)}")
    return BUILDERS[family](seed)
