"""Tiny random pipelines of the flow-matching image families of diffusers 0.42 (FLUX.2, Qwen-Image, Chroma, ...).

Built from config with random weights and locally made tokenizers, like
:mod:`inversa.tiny.random_pipelines` (which dispatches here for these names).
"""
from __future__ import annotations

import torch

from inversa.core.errors import InversaError
from inversa.tiny.chat_tokenizer import make_qwen_tokenizer

FLOW_FAMILIES = ("flux2", "flux2-klein", "qwenimage", "chroma", "kontext", "lumina2", "zimage", "hidream")


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


def _qwen25_vl(tok, seed: int):
    """A tiny Qwen2.5-VL (the vision tower is built but never used for text prompts)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    special = tok.convert_tokens_to_ids("<|im_start|>")
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]}, pad_token_id=tok.pad_token_id,
                         bos_token_id=special, eos_token_id=tok.eos_token_id),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32, patch_size=2,
                           spatial_merge_size=1, temporal_patch_size=1, fullatt_block_indexes=[0], window_size=4),
        image_token_id=special, video_token_id=special, vision_start_token_id=special)
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def qwenimage(seed: int = 0):
    """QwenImagePipeline: Qwen2.5-VL text, a 2x Wan-style VAE with per-channel mean/std, Qwen-Image's schedule quirks."""
    import diffusers as d

    tok = make_qwen_tokenizer(1024)
    torch.manual_seed(seed)
    vae = d.AutoencoderKLQwenImage(base_dim=16, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                                   latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0]).eval()
    torch.manual_seed(seed)
    net = d.QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(2, 2, 4)).eval()
    # the published config's kind: dynamic exponential shift over a longer range, and a terminal sigma of 0.02
    sched = d.FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                              base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                              time_shift_type="exponential")
    return d.QwenImagePipeline(scheduler=sched, vae=vae, text_encoder=_qwen25_vl(tok, seed), tokenizer=tok,
                               transformer=net)


def chroma(seed: int = 0):
    """ChromaPipeline: FLUX.1's tiny layout with a T5 encoder only and no guidance embedding."""
    import diffusers as d

    from inversa.tiny.parts import random_t5_encoder, random_vae
    from inversa.tiny.vocab import make_t5_tokenizer

    torch.manual_seed(seed)
    net = d.ChromaTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                     num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(2, 2, 4),
                                     approximator_num_channels=16, approximator_hidden_dim=32,
                                     approximator_layers=1).eval()
    vae = random_vae(seed, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    tok = make_t5_tokenizer()
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                              base_image_seq_len=256, max_image_seq_len=4096)
    return d.ChromaPipeline(scheduler=sched, vae=vae, text_encoder=random_t5_encoder(tok, 32, seed), tokenizer=tok,
                            transformer=net)


def kontext(seed: int = 0):
    """FluxKontextPipeline: the tiny FLUX.1-dev's components (CLIP + T5, guidance embedding)."""
    import diffusers as d

    import tempfile

    from inversa.tiny.parts import random_flux
    from inversa.tiny.vocab import make_tokenizer

    parts = random_flux(make_tokenizer(tempfile.mkdtemp(prefix="inversa-tok-")), seed, schnell=False).components
    return d.FluxKontextPipeline(**parts)


def lumina2(seed: int = 0):
    """Lumina2Pipeline: Gemma-2 text (its second-to-last hidden states), a single-stream DiT, unpacked latents."""
    import diffusers as d
    from transformers import Gemma2Config, Gemma2Model

    from inversa.tiny.chat_tokenizer import make_gemma_tokenizer
    from inversa.tiny.parts import random_vae

    tok = make_gemma_tokenizer()
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                       pad_token_id=0, bos_token_id=2, eos_token_id=1)
    torch.manual_seed(seed)
    text = Gemma2Model(cfg).eval()
    torch.manual_seed(seed)
    net = d.Lumina2Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, hidden_size=16, num_layers=1,
                                      num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1, multiple_of=16,
                                      axes_dim_rope=(2, 2, 4), axes_lens=(300, 64, 64), cap_feat_dim=16).eval()
    vae = random_vae(seed, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    sched = d.FlowMatchEulerDiscreteScheduler(shift=6.0)  # Lumina-Image-2.0's static shift
    return d.Lumina2Pipeline(transformer=net, scheduler=sched, vae=vae, text_encoder=text, tokenizer=tok)


def zimage(seed: int = 0):
    """ZImagePipeline: Qwen3 text (second-to-last hidden states, padding dropped), a single-stream DiT."""
    import diffusers as d

    from inversa.tiny.parts import random_vae

    tok = make_qwen_tokenizer()
    torch.manual_seed(seed)
    net = d.ZImageTransformer2DModel(in_channels=4, dim=16, n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                                     cap_feat_dim=16, axes_dims=[2, 2, 4], axes_lens=[1024, 64, 64]).eval()
    vae = random_vae(seed, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0)  # Z-Image-Turbo's static shift
    return d.ZImagePipeline(scheduler=sched, vae=vae, text_encoder=_qwen3(tok, seed=seed, causal_lm=False),
                            tokenizer=tok, transformer=net)


def _mistral3(tok, seed: int):
    """A tiny Mistral-3 (FLUX.2 [dev] reads hidden states 10, 20 and 30: 31 layers); its Pixtral tower is unused."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    cfg = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=31, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, patch_size=4, image_size=16),
        image_token_index=tok.convert_tokens_to_ids("<|im_start|>"), spatial_merge_size=1, vision_feature_layer=-1)
    torch.manual_seed(seed)
    return Mistral3ForConditionalGeneration(cfg).eval()


def flux2_dev(seed: int = 0):
    """Flux2Pipeline ([dev]): Mistral-3 text, a guidance embedding instead of CFG. The byte-level chat tokenizer
    stands in for the Pixtral processor (the pipeline only calls its ``apply_chat_template``)."""
    import diffusers as d

    tok = make_qwen_tokenizer()
    torch.manual_seed(seed)
    net = d.Flux2Transformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                    num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32,
                                    axes_dims_rope=(2, 2, 2, 2), guidance_embeds=True).eval()
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                              base_image_seq_len=256, max_image_seq_len=4096)
    return d.Flux2Pipeline(scheduler=sched, vae=_flux2_vae(seed), text_encoder=_mistral3(tok, seed), tokenizer=tok,
                           transformer=net)


def _llama(tok, seed: int):
    """A tiny Llama-3 (HiDream reads every layer's hidden states; its transformer picks ``llama_layers``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                      pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def hidream(seed: int = 0):
    """HiDreamImagePipeline: two CLIPs (pooled), T5 and Llama-3 (all layers) text, a MoE flow DiT, static shift."""
    import tempfile

    import diffusers as d

    from inversa.tiny.parts import random_t5_encoder, random_text_encoder, random_vae
    from inversa.tiny.vocab import make_t5_tokenizer, make_tokenizer

    clip_tok = make_tokenizer(tempfile.mkdtemp(prefix="inversa-tok-"), max_length=128)  # HiDream pads CLIP to 128
    clips = [random_text_encoder(clip_tok, hidden=16, projection=8, seed=seed + i, positions=128) for i in range(2)]
    llama_tok, t5_tok = make_qwen_tokenizer(128), make_t5_tokenizer()
    torch.manual_seed(seed)
    net = d.HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, num_layers=1, num_single_layers=1,
                                           attention_head_dim=8, num_attention_heads=2, caption_channels=[32, 16],
                                           text_emb_dim=16, num_routed_experts=2, num_activated_experts=1,
                                           axes_dims_rope=(4, 2, 2), max_resolution=(16, 16), llama_layers=[1, 3]).eval()
    vae = random_vae(seed, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0)  # HiDream-I1-Fast's static shift (Dev: 6.0)
    return d.HiDreamImagePipeline(scheduler=sched, vae=vae, text_encoder=clips[0], tokenizer=clip_tok,
                                  text_encoder_2=clips[1], tokenizer_2=clip_tok,
                                  text_encoder_3=random_t5_encoder(t5_tok, 32, seed + 2), tokenizer_3=t5_tok,
                                  text_encoder_4=_llama(llama_tok, seed + 3), tokenizer_4=llama_tok, transformer=net)


BUILDERS = {"hidream": hidream, "flux2": flux2_dev, "zimage": zimage, "lumina2": lumina2, "flux2-klein": flux2_klein, "qwenimage": qwenimage, "chroma": chroma, "kontext": kontext}


def build(family: str, seed: int = 0):
    if family not in BUILDERS:
        raise InversaError(f"no tiny {family!r} pipeline yet; built: {', '.join(BUILDERS)}")
    return BUILDERS[family](seed)
