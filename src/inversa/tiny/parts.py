"""Tiny random components shared by the test pipelines: CLIP and T5 text encoders, a VAE, a UNet, FLUX.1."""
from __future__ import annotations

import torch

from inversa.tiny.vocab import make_t5_tokenizer


def random_text_encoder(tokenizer, hidden: int = 32, projection: int | None = None, seed: int = 0, positions: int = 77):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=positions, projection_dim=projection or hidden,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, hidden_act="gelu")
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def random_vae(seed: int = 0, **kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=32, sample_size=64, **kw).eval()


def random_unet(seed: int = 0, cross: int = 32, **kw):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross,
                                attention_head_dim=8, norm_num_groups=32, **kw).eval()


def random_t5_encoder(tokenizer, d_model: int, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval()


def random_flux(tok, seed: int, schnell: bool):
    """FLUX.1-dev (guidance embedding, resolution-dependent shift) or -schnell (neither), tiny."""
    import diffusers as d

    torch.manual_seed(seed)
    # 4 latent channels packed 2x2 into 16 per token; rope axes sum to the head dim; T5 width = joint dim
    net = d.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                   pooled_projection_dim=32, guidance_embeds=not schnell,
                                   axes_dims_rope=(2, 2, 4)).eval()
    sched = (d.FlowMatchEulerDiscreteScheduler(shift=1.0) if schnell else
             d.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096))
    vae = random_vae(seed, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    t5_tok = make_t5_tokenizer()
    return d.FluxPipeline(scheduler=sched, vae=vae, text_encoder=random_text_encoder(tok, seed=seed), tokenizer=tok,
                          text_encoder_2=random_t5_encoder(t5_tok, 32, seed + 1), tokenizer_2=t5_tok, transformer=net)
