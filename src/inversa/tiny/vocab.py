"""A small CLIP BPE vocabulary built from a word list, so tokenizers need no download."""
from __future__ import annotations

import json
import os
import string

SPECIAL = ("<|startoftext|>", "<|endoftext|>")
BASIC_WORDS = ("a", "an", "the", "of", "on", "in", "and", "with", "photo", "image", "cat", "dog", "man", "woman",
               "red", "green", "blue", "yellow", "white", "black", "circle", "square", "triangle", "star",
               "background", "top", "bottom", "left", "right", "center", "painting", "astronaut", "coffee", "cup")


def build_vocab(words=BASIC_WORDS) -> tuple[dict[str, int], list[str]]:
    """Characters (plain and word-final) plus left-to-right merges that spell each word whole."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = list(chars) + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in sorted(set(w.lower() for w in words)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        cur = pieces[0]
        for nxt in pieces[1:]:
            merge = f"{cur} {nxt}"
            if merge not in merges:
                merges.append(merge)
            cur = cur + nxt
            if cur not in tokens:
                tokens.append(cur)
    tokens += list(SPECIAL)
    return {t: i for i, t in enumerate(tokens)}, merges


def save_vocab(folder: str, words=BASIC_WORDS) -> tuple[str, str]:
    """Write vocab.json and merges.txt for ``CLIPTokenizer``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    vocab, merges = build_vocab(words)
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


def make_tokenizer(folder: str, words=BASIC_WORDS, max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = save_vocab(folder, words)
    return CLIPTokenizer(vocab_file, merges_file, model_max_length=max_length)


def build_unigram(words=BASIC_WORDS) -> list[tuple[str, float]]:
    """A T5-style unigram vocabulary: specials, whole words (preferred), then single characters."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    whole = [("\u2581" + w, -1.0) for w in sorted(set(w.lower() for w in words))]
    return ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + whole
            + [(c, -5.0) for c in chars])


def make_t5_tokenizer(words=BASIC_WORDS):
    """A ``T5TokenizerFast`` (FLUX's second tokenizer) from a local word list, no sentencepiece file."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=build_unigram(words), extra_ids=0)
