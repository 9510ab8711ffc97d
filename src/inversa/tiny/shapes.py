"""Procedural captioned shapes: the training data of the embedded model.

Every image is one coloured shape on a plain, gradient or two-tone background, with
a caption naming shape, colour, size, background and position, and the exact object
mask (the editing benchmark needs it). Item ``i`` of a dataset depends only on
``(seed, i)``, so datasets are deterministic and can be regenerated anywhere.
Some (colour, shape, position) triples never occur in the ``train`` split; the
``heldout`` split uses only those, to test that captions compose.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from inversa.core.errors import InversaError

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "orange": (245, 140, 20), "purple": (140, 40, 180), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond")
SIZES = {"small": 8.0, "large": 13.0}
POSITIONS = {"top left": (16, 16), "top right": (48, 16), "bottom left": (16, 48), "bottom right": (48, 48),
             "center": (32, 32)}
BACKGROUNDS = ("plain", "gradient", "two-tone")
JITTER = 2.0
SUPERSAMPLE = 4


def _triples() -> list[tuple[str, str, str]]:
    return [(c, s, p) for c in COLOURS for s in SHAPES for p in POSITIONS]


def heldout_triples(count: int = 20, seed: int = 1234) -> frozenset:
    """The (colour, shape, position) combinations kept out of the training split."""
    triples = _triples()
    pick = np.random.default_rng(seed).choice(len(triples), size=count, replace=False)
    return frozenset(triples[i] for i in pick)


HELDOUT = heldout_triples()


def vocabulary() -> list[str]:
    """Every word a caption can use (for the tokenizer)."""
    words = {"a", "on", "background", "gradient", "and", ","}
    for group in (COLOURS, SHAPES, SIZES, POSITIONS):
        for name in group:
            words.update(name.split())
    return sorted(words)


@dataclass(frozen=True)
class ShapeSpec:
    """Everything needed to draw one image; ``cx, cy, r`` in pixels of a SIZE x SIZE image."""

    shape: str
    colour: str
    size: str
    position: str
    background: str
    bg_colours: tuple[str, ...]
    cx: float
    cy: float
    r: float
    vertical: bool = True  # gradient direction

    @property
    def caption(self) -> str:
        bg = {"plain": self.bg_colours[0], "gradient": f"{self.bg_colours[0]} gradient",
              "two-tone": " and ".join(self.bg_colours)}[self.background]
        return f"a {self.size} {self.colour} {self.shape} on a {bg} background, {self.position}"


@dataclass
class Sample:
    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    mask: np.ndarray  # (SIZE, SIZE) bool, the object
    caption: str
    spec: ShapeSpec


def nominal(shape: str, colour: str, size: str, position: str, background: str = "plain",
            bg_colours: tuple[str, ...] = ("blue",), vertical: bool = True) -> ShapeSpec:
    """The spec a caption describes, without random jitter."""
    cx, cy = POSITIONS[position]
    return ShapeSpec(shape, colour, size, position, background, tuple(bg_colours), float(cx), float(cy),
                     SIZES[size], vertical)


def random_spec(rng: np.random.Generator, split: str = "train") -> ShapeSpec:
    """Draw a spec; ``split`` is 'train' (no held-out triple), 'heldout' (only those) or 'all'."""
    if split not in ("train", "heldout", "all"):
        raise InversaError(f"split must be train, heldout or all, not {split!r}")
    names = list(COLOURS)
    if split == "heldout":
        held = sorted(HELDOUT)
        colour, shape, position = held[rng.integers(len(held))]
    else:
        while True:
            colour, shape, position = names[rng.integers(8)], SHAPES[rng.integers(len(SHAPES))], \
                list(POSITIONS)[rng.integers(len(POSITIONS))]
            if split == "all" or (colour, shape, position) not in HELDOUT:
                break
    size = list(SIZES)[rng.integers(len(SIZES))]
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    others = [c for c in names if c != colour]
    n_bg = 2 if background == "two-tone" else 1
    bg = tuple(others[k] for k in rng.choice(len(others), size=n_bg, replace=False))
    spec = nominal(shape, colour, size, position, background, bg, bool(rng.integers(2)))
    dx, dy = rng.uniform(-JITTER, JITTER, size=2)
    return replace(spec, cx=spec.cx + dx, cy=spec.cy + dy, r=spec.r + rng.uniform(-1, 1))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        h = 1.15 * r
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape == "triangle":
        R = 1.2 * r
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [(cx + R * np.cos(a), cy + 0.15 * r - R * np.sin(a)) for a in angles]
    if shape == "star":
        outer, inner = 1.3 * r, 0.55 * r
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = [outer if k % 2 == 0 else inner for k in range(10)]
        return [(cx + rad * np.cos(a), cy - rad * np.sin(a)) for rad, a in zip(radii, angles)]
    raise InversaError(f"unknown shape {shape!r}")


def coverage(spec: ShapeSpec, size: int = SIZE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (size, size) float in [0, 1] (supersampled)."""
    from PIL import Image, ImageDraw

    k = SUPERSAMPLE * size / SIZE
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    cx, cy, r = spec.cx * k, spec.cy * k, spec.r * k
    if spec.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(spec.shape, cx, cy, r), fill=255)
    small = big.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def background(spec: ShapeSpec, size: int = SIZE) -> np.ndarray:
    """The background alone, (size, size, 3) float in [0, 255]."""
    first = np.array(COLOURS[spec.bg_colours[0]], dtype=np.float64)
    out = np.broadcast_to(first, (size, size, 3)).copy()
    if spec.background == "gradient":
        t = np.linspace(-1.0, 1.0, size)[:, None, None] if spec.vertical else np.linspace(-1.0, 1.0, size)[None, :, None]
        light, dark = first + 0.35 * (255 - first), 0.65 * first
        out = np.where(t < 0, first + (-t) * (light - first), first + t * (dark - first)) * np.ones((size, size, 1))
    elif spec.background == "two-tone":
        out[:, size // 2:] = np.array(COLOURS[spec.bg_colours[1]], dtype=np.float64)
    return out


def render(spec: ShapeSpec, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (size, size, 3), mask bool (size, size)) for ``spec``."""
    alpha = coverage(spec, size)[..., None]
    colour = np.array(COLOURS[spec.colour], dtype=np.float64)
    image = background(spec, size) * (1 - alpha) + colour * alpha
    return np.round(image).clip(0, 255).astype(np.uint8), alpha[..., 0] >= 0.5


def sample(seed: int, index: int, split: str = "train") -> Sample:
    """Item ``index`` of the dataset ``(seed, split)``; depends on nothing else."""
    tag = {"train": 0, "heldout": 1, "all": 2}[split]
    spec = random_spec(np.random.default_rng([seed, tag, index]), split)
    image, mask = render(spec)
    return Sample(image, mask, spec.caption, spec)


def dataset(n: int, seed: int = 0, split: str = "train", start: int = 0) -> list[Sample]:
    return [sample(seed, i, split) for i in range(start, start + n)]


_CAPTION = re.compile(r"^a (?P<size>\w+) (?P<colour>\w+) (?P<shape>\w+) on a (?P<bg>[\w ]+?) background, "
                      r"(?P<position>[\w ]+)$")


def parse_caption(caption: str) -> ShapeSpec:
    """The nominal (unjittered) spec a caption names; ValueError if it is not one of ours."""
    m = _CAPTION.match(caption.strip())
    if not m:
        raise InversaError(f"not a shapes caption: {caption!r}")
    bg = m["bg"].split()
    if len(bg) == 2 and bg[1] == "gradient":
        background_type, colours = "gradient", (bg[0],)
    elif len(bg) == 3 and bg[1] == "and":
        background_type, colours = "two-tone", (bg[0], bg[2])
    elif len(bg) == 1:
        background_type, colours = "plain", (bg[0],)
    else:
        raise InversaError(f"unknown background in {caption!r}")
    return nominal(m["shape"], m["colour"], m["size"], m["position"], background_type, colours)


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """``mask`` grown by ``k`` pixels (square neighbourhood); nothing wraps round the borders."""
    h, w = mask.shape
    padded, out = np.pad(mask, k), np.zeros_like(mask)
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def nearest_colour(rgb) -> str:
    """Palette name closest (Euclidean RGB) to ``rgb`` in [0, 255]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda name: float(((np.array(COLOURS[name]) - rgb) ** 2).sum()))
