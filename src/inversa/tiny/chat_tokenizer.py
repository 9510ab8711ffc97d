"""A byte-level BPE tokenizer with a chat template, built locally for tiny Qwen/Llama-style text encoders.

Every byte is one token (no merges), so any prompt encodes without a download; the
specials and the template are the ones the pipelines' ``encode_prompt`` rely on.
"""
from __future__ import annotations

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# the Qwen-style chat layout: one block per message, an open assistant block, an empty think block when thinking is off
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                 "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
                 "{% for part in m['content'] %}{{ part['text'] }}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
                 "{% endif %}")


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the raw bytes (GPT-2's byte-to-unicode table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def make_qwen_tokenizer(max_length: int = 512):
    """A ``Qwen2Tokenizer`` (Qwen2.5-VL, Qwen3) over single bytes, padding on the right with ``<|endoftext|>``."""
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    vocab.update({s: 256 + i for i, s in enumerate(SPECIAL)})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         model_max_length=max_length)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL[1:])})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_gemma_tokenizer():
    """A ``GemmaTokenizer`` over single characters (word starts marked by U+2581, as SentencePiece does)."""
    import string

    from transformers import GemmaTokenizer

    chars = ["\u2581"] + list(string.ascii_letters + string.digits + string.punctuation)
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + chars)}
    return GemmaTokenizer(vocab=vocab, merges=[])
