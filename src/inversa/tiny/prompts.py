"""Natural prompts onto the embedded model's one caption template.

The embedded model was trained only on captions like "a large red circle on a blue
background, center" (:mod:`inversa.tiny.shapes`); other word orders or missing parts
move its text embedding off anything it has seen (the README's "a red circle on a blue
background" turned the whole image green). Here a prompt is read for the words the
model knows (the colour before the shape word, the shape, size, background colours and
kind, position); what it leaves out comes from ``base`` (the source prompt's reading,
so a target inherits the source's size and position) or from the defaults below.
"""
from __future__ import annotations

import re

from inversa.core.errors import InversaError
from inversa.tiny import shapes as S

DEFAULTS = {"size": "large", "position": "center", "background": "plain", "bg_colours": ("blue",)}
ALIASES = {"centre": "center", "middle": "center", "big": "large", "little": "small",
           "squares": "square", "circles": "circle", "triangles": "triangle", "stars": "star", "diamonds": "diamond",
           "disc": "circle", "disk": "circle", "rhombus": "diamond", "violet": "purple"}


def read(prompt: str) -> dict:
    """The fields of ``S.ShapeSpec`` a prompt names (absent ones left out)."""
    words = [ALIASES.get(w, w) for w in re.findall(r"[a-z-]+", prompt.lower())]
    out: dict = {}
    shape_at = next((i for i, w in enumerate(words) if w in S.SHAPES), None)
    if shape_at is not None:
        out["shape"] = words[shape_at]
    end = shape_at if shape_at is not None else words.index("background") if "background" in words else len(words)
    before = [w for w in words[:end] if w in S.COLOURS]
    if before:
        out["colour"] = before[-1]
    size = [w for w in words if w in S.SIZES]
    if size:
        out["size"] = size[0]
    if "background" in words:
        start = shape_at + 1 if shape_at is not None else 0
        bg = [w for w in words[start:words.index("background")] if w in S.COLOURS]
        if bg:
            out["bg_colours"] = tuple(bg[:2])
            out["background"] = "two-tone" if len(bg) > 1 else "gradient" if "gradient" in words else "plain"
    text = " ".join(words)
    for name in sorted(S.POSITIONS, key=len, reverse=True):
        if name in text:
            out["position"] = name
            break
    return out


def to_template(prompt: str, base: dict | None = None) -> str | None:
    """The training caption for ``prompt`` (missing fields from ``base``, then defaults); None without a shape."""
    try:
        return S.parse_caption(prompt).caption  # already the template
    except InversaError:
        pass
    fields = {**DEFAULTS, **(base or {}), **read(prompt)}
    if "shape" not in fields or "colour" not in fields:
        return None
    return S.nominal(fields["shape"], fields["colour"], fields["size"], fields["position"], fields["background"],
                     fields["bg_colours"]).caption


def template_pair(source: str, target: str) -> tuple[str, str]:
    """Source and target prompts in the template; the target inherits what it does not say from the source."""
    src = to_template(source)
    if src is None:
        return source, target
    base = read(src)
    tgt = to_template(target, base)
    return src, tgt if tgt is not None else target
