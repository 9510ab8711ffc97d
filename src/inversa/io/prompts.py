"""What the text encoder will really read of a prompt, said as ``note:`` lines.

A CLIP tokenizer silently cuts a prompt to its length and spells a word it does
not know letter by letter (or drops characters it cannot spell at all), so the
model conditions on something else than the user wrote.
"""
from __future__ import annotations

import re


def prompt_notes(model, prompts: list[str]) -> list[str]:
    """Notes about truncated prompts and words outside the tokenizer's vocabulary (none without a tokenizer)."""
    tok = getattr(getattr(model, "pipe", None), "tokenizer", None)
    if tok is None:
        return []
    notes = []
    for prompt in dict.fromkeys(p for p in prompts if p):
        tokens = tok.tokenize(prompt)
        room = tok.model_max_length - 2  # start and end tokens
        if len(tokens) > room:
            dropped = _text(tok, tokens[room:])
            notes.append(f"prompt {prompt!r} is {len(tokens)} tokens; the model reads {room}, dropping {dropped!r}")
        unknown = [w for w in dict.fromkeys(re.findall(r"\w+", prompt)) if _unknown(tok, w)]
        if unknown:
            notes.append(f"prompt {prompt!r}: {', '.join(unknown)} not in the model's vocabulary (spelled letter by "
                         "letter or dropped)")
    return notes


def _unknown(tok, word: str) -> bool:
    """Unknown when the tokenizer drops some of it or spells it one character per token."""
    pieces = tok.tokenize(word)
    if tok.unk_token in pieces or _text(tok, pieces) != word.lower():
        return True
    return len(word) > 1 and all(len(_text(tok, [p])) == 1 for p in pieces)


def _text(tok, pieces: list[str]) -> str:
    return tok.decode(tok.convert_tokens_to_ids(pieces), skip_special_tokens=True).strip()
