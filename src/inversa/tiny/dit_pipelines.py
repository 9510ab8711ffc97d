"""Tiny random cross-attention DiT pipelines (SANA, PixArt-Sigma, HunyuanDiT), built from config.

32x32 images; each family's stock scheduler config with its quirks (SANA's flow-DPM with
``flow_shift``, PixArt's epsilon DPM-Solver, HunyuanDiT's v-prediction DDPM). Tokenizers are
built from a local word list, as :mod:`inversa.tiny.vocab` does for CLIP and T5.
"""
from __future__ import annotations

import string

import torch

from inversa.core.errors import InversaError
from inversa.tiny.vocab import BASIC_WORDS

DIT_FAMILIES = ("sana", "pixart", "hunyuandit")


def _instruction_words() -> list[str]:
    """The words of SanaPipeline's default complex human instruction (so it tokenizes to words, not letters)."""
    import inspect
    import re

    from diffusers import SanaPipeline

    text = " ".join(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


def make_gemma_tokenizer(words=BASIC_WORDS):
    """A ``GemmaTokenizer`` (SANA's Gemma-2 tokenizer) over characters and whole words, no sentencepiece file.

    Gemma's BPE sees a sentence as one piece with spaces as ``\u2581``; each word ``\u2581word`` is
    spelled by a chain of merges from its letters.
    """
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "\u2581": 5}
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(c, len(vocab))
    merges = []
    for word in sorted(set(words) | set(_instruction_words())):
        cur = "\u2581"
        for c in word:
            merges.append((cur, c))
            cur += c
            vocab.setdefault(cur, len(vocab))
    merges = list(dict.fromkeys(merges))
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)  # as Gemma: <bos> first, never all padding


def _gemma(tok, seed: int):
    from transformers import Gemma2Config, Gemma2Model

    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=2048,
                       pad_token_id=0, bos_token_id=2, eos_token_id=1, attn_logit_softcapping=None)
    torch.manual_seed(seed)
    return Gemma2Model(cfg).eval()


def _dc_ae(seed: int):
    """A two-stage DC-AE (scale 2) with SANA's scaling factor."""
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    blocks = ("ResBlock", "EfficientViTBlock")
    return AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=blocks,
                         decoder_block_types=blocks, encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                         encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                         encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                         upsample_block_type="interpolate", downsample_block_type="Conv",
                         scaling_factor=0.41407).eval()


def _sana(seed: int):
    import diffusers as d

    torch.manual_seed(seed)
    net = d.SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=4,
                                   num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=4,
                                   cross_attention_dim=8, caption_channels=16, sample_size=16, patch_size=1).eval()
    # SANA 1.6B 1024px's scheduler config: Flow-DPM-Solver (DPM-Solver++ order 2 on shifted flow sigmas)
    sched = d.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", beta_schedule="linear", beta_start=0.0001,
                                          beta_end=0.02, final_sigmas_type="zero", flow_shift=3.0,
                                          lower_order_final=True, prediction_type="flow_prediction", solver_order=2,
                                          use_flow_sigmas=True, timestep_spacing="linspace")
    tok = make_gemma_tokenizer()
    return d.SanaPipeline(tokenizer=tok, text_encoder=_gemma(tok, seed), vae=_dc_ae(seed), transformer=net,
                          scheduler=sched)


def _pixart(seed: int):
    """PixArtSigmaPipeline: T5 text (mask kept), a learned-sigma DiT, PixArt-Sigma's DPM-Solver++ config."""
    import diffusers as d

    from inversa.tiny.parts import random_t5_encoder, random_vae
    from inversa.tiny.vocab import make_t5_tokenizer

    torch.manual_seed(seed)
    net = d.PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                     num_layers=2, cross_attention_dim=16, caption_channels=32, sample_size=16,
                                     patch_size=2, norm_type="ada_norm_single", use_additional_conditions=False,
                                     interpolation_scale=1).eval()
    # PixArt-Sigma-XL-2-1024-MS's scheduler_config.json (epsilon, DPM-Solver++ order 2, linear betas)
    sched = d.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", beta_schedule="linear", beta_start=0.0001,
                                          beta_end=0.02, lower_order_final=True, prediction_type="epsilon",
                                          solver_order=2, solver_type="midpoint", steps_offset=0,
                                          timestep_spacing="linspace", num_train_timesteps=1000)
    tok = make_t5_tokenizer()
    return d.PixArtSigmaPipeline(tokenizer=tok, text_encoder=random_t5_encoder(tok, 32, seed), vae=random_vae(seed), transformer=net,
                                 scheduler=sched)


def _bert(seed: int):
    """A tiny BERT with a word-level WordPiece vocabulary (HunyuanDiT's first, CLIP-like, encoder)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + sorted(set(BASIC_WORDS) | set(string.ascii_lowercase) | set(string.punctuation))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=77)
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=80, pad_token_id=0)
    torch.manual_seed(seed)
    return tok, BertModel(cfg).eval()  # the pooler is unused, but the saved folder loads without a report


def _vae8(seed: int):
    """An AutoencoderKL with four blocks: HunyuanDiT's loop assumes the 8x VAE (``height // 8``)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=8, sample_size=32, scaling_factor=0.13025).eval()


def _hunyuandit(seed: int):
    """HunyuanDiTPipeline: BERT (77 tokens) + mT5 (256 tokens), a skip-connected learned-sigma DiT, v-prediction DDPM."""
    import diffusers as d

    from inversa.tiny.parts import random_t5_encoder
    from inversa.tiny.vocab import make_t5_tokenizer

    torch.manual_seed(seed)
    net = d.HunyuanDiT2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2,
                              hidden_size=16, num_layers=4, cross_attention_dim=16, cross_attention_dim_t5=32,
                              pooled_projection_dim=16, sample_size=4, text_len=77, text_len_t5=256,
                              use_style_cond_and_image_meta_size=True).eval()
    # HunyuanDiT's scheduler_config.json: DDPM, scaled-linear betas to 0.03, v-prediction, leading spacing
    sched = d.DDPMScheduler(beta_start=0.00085, beta_end=0.03, beta_schedule="scaled_linear", clip_sample=False,
                            prediction_type="v_prediction", steps_offset=1, timestep_spacing="leading",
                            variance_type="fixed_small", num_train_timesteps=1000)
    tok, bert = _bert(seed)
    t5_tok = make_t5_tokenizer()
    return d.HunyuanDiTPipeline(vae=_vae8(seed), text_encoder=bert, tokenizer=tok, transformer=net, scheduler=sched,
                                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                text_encoder_2=random_t5_encoder(t5_tok, 32, seed + 1), tokenizer_2=t5_tok)


def build(family: str, seed: int = 0):
    """A tiny random pipeline of ``family`` (one of :data:`DIT_FAMILIES`)."""
    if family == "sana":
        return _sana(seed)
    if family == "pixart":
        return _pixart(seed)
    if family == "hunyuandit":
        return _hunyuandit(seed)
    raise InversaError(f"unknown family {family!r}; expected one of {DIT_FAMILIES}")
