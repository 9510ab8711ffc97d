"""PIE-Bench: its layout, its masks and its background metrics, plus a PIE-format shapes set.

PIE-Bench (Ju et al. 2023, "Direct Inversion") is a folder with ``mapping_file.json``
(id -> ``image_path`` under ``annotation_images/``, ``original_prompt``, ``editing_prompt``
with the changed words in square brackets, ``editing_instruction``, ``editing_type_id``
"0"-"9", ``blended_word`` "src tgt" and ``mask``) and the images. A mask is run-length
pairs ``[start, length, ...]`` over a row-major 512 x 512 array, 1 = edited region; the
benchmark forces the four one-pixel borders to 1 (annotation errors there), and so do we.
Background metrics follow its evaluation: both images in [0, 1] multiplied by
``1 - mask``, then PSNR / MSE / SSIM over the whole (masked) image.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from inversa.core.errors import InversaError

SIDE = 512  # PIE's masks are over 512 x 512
EDIT_TYPES = {"0": "random", "1": "change object", "2": "add object", "3": "delete object",
              "4": "change content", "5": "change pose", "6": "change colour", "7": "change material",
              "8": "change background", "9": "change style"}
SHAPES_TYPES = {"colour": "6", "shape": "1", "position": "5", "background": "8"}  # shapes edit -> PIE type


def check_rle(pairs, what: str = "RLE mask", total: int = SIDE * SIDE) -> list[int]:
    """``[start, length, ...]`` pairs of whole numbers >= 0, each run inside the ``total`` pixels (PIE: 512 x 512)."""
    if not isinstance(pairs, list):
        raise InversaError(f"{what} must be a list of start, length pairs, not {type(pairs).__name__}")
    if len(pairs) % 2:
        raise InversaError(f"{what} has an odd number of values ({len(pairs)}); expected start, length pairs")
    for k, v in enumerate(pairs):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InversaError(f"{what} value {k} is {v!r:.40}; runs are whole numbers")
        if v < 0:
            raise InversaError(f"{what} value {k} is {v}; runs are never negative")
    for k in range(0, len(pairs), 2):
        if pairs[k] + pairs[k + 1] > total:
            raise InversaError(f"{what} run {k // 2} ({pairs[k]}, {pairs[k + 1]}) ends past the {total} pixels "
                               f"of a {SIDE}x{SIDE} mask")
    return pairs


def decode_rle(pairs, shape: tuple[int, int] = (SIDE, SIDE), borders: bool = True) -> np.ndarray:
    """PIE's mask: ``[start, length, ...]`` over the row-major array, borders forced to 1; bool (H, W)."""
    check_rle(list(pairs) if isinstance(pairs, tuple) else pairs, total=shape[0] * shape[1])
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    for start, length in zip(pairs[0::2], pairs[1::2]):
        flat[int(start):int(start) + int(length)] = True
    mask = flat.reshape(shape)
    if borders:
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def encode_rle(mask: np.ndarray) -> list[int]:
    """Inverse of :func:`decode_rle` (before the borders): runs of ones as ``[start, length, ...]``."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=np.int8).ravel(), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def strip_brackets(prompt: str) -> str:
    return prompt.replace("[", "").replace("]", "")


@dataclass
class PieItem:
    """One PIE edit; ``extra`` keeps keys PIE does not define (the shapes set's truth)."""

    id: str
    image_path: str
    source_prompt: str
    target_prompt: str
    instruction: str
    edit_type: str
    blended_words: tuple[str, ...]
    rle: list = field(repr=False)
    extra: dict = field(default_factory=dict, repr=False)

    def mask(self, size: int, key: str | None = None) -> Tensor:
        """The edited region (or the RLE mask ``extra[key]``) at ``size`` x ``size``: (1, 1, S, S), area >= 0.5."""
        rle = self.rle if key is None else self.extra[key]
        full = torch.from_numpy(decode_rle(rle, borders=key is None)).float()[None, None]
        return (torch.nn.functional.interpolate(full, size=(size, size), mode="area") >= 0.5).float()

    def load(self, size: int) -> Tensor:
        from inversa.io.images import read_image, to_tensor

        return to_tensor(read_image(self.image_path), size, "resize")


TEXT_FIELDS = ("image_path", "original_prompt", "editing_prompt")
OPTIONAL_TEXT = ("editing_instruction", "blended_word")


def load_pie(folder: str, limit: int | None = None, types: set[str] | None = None) -> list[PieItem]:
    """The edits of a PIE-Bench folder (sorted by id), optionally of some edit types only.

    The mapping is read within bounds and every field checked (one line naming the first
    bad entry); an ``image_path`` must stay inside ``annotation_images/`` (resolved).
    """
    from inversa.core.checks import inside, read_json

    path = os.path.join(folder, "mapping_file.json")
    if not os.path.isdir(folder) or not os.path.lexists(path):
        raise InversaError(f"{folder} is not a PIE-Bench folder: no mapping_file.json")
    mapping = read_json(path, "PIE mapping")
    if not isinstance(mapping, dict):
        raise InversaError(f"{path}: expected an object of id -> edit, not a {type(mapping).__name__}")
    if not mapping:
        raise InversaError(f"{path} holds no edits")
    images = os.path.join(folder, "annotation_images")
    items = []
    for key in sorted(mapping):
        e = mapping[key]
        if not isinstance(e, dict):
            raise InversaError(f"{path}: entry {key} must be an object, not {type(e).__name__}")
        missing = {"image_path", "original_prompt", "editing_prompt", "mask"} - set(e)
        if missing:
            raise InversaError(f"{path}: entry {key} lacks {', '.join(sorted(missing))}")
        for name in TEXT_FIELDS + tuple(k for k in OPTIONAL_TEXT if k in e):
            if not isinstance(e[name], str):
                raise InversaError(f"{path}: entry {key} field {name} must be a string, got {e[name]!r:.40}")
        kind = e.get("editing_type_id", "0")
        if isinstance(kind, bool) or not isinstance(kind, (str, int)) or str(kind) not in EDIT_TYPES:
            raise InversaError(f"{path}: entry {key} editing_type_id must be one of 0-9, got {kind!r:.40}")
        kind = str(kind)
        if not e["image_path"] or os.path.isabs(e["image_path"]):
            raise InversaError(f"{path}: entry {key} image_path {e['image_path']!r} must be relative to "
                               "annotation_images/")
        image = os.path.join(images, e["image_path"])
        inside(images, image, f"{path}: entry {key} image_path")
        check_rle(e["mask"], f"{path}: entry {key} mask")
        extra = {k: v for k, v in e.items() if k.startswith("x_")}
        for name, value in extra.items():
            if name.endswith("_mask"):
                check_rle(value, f"{path}: entry {key} {name}")
        if types and kind not in types:
            continue
        items.append(PieItem(key, image, strip_brackets(e["original_prompt"]), strip_brackets(e["editing_prompt"]),
                             e.get("editing_instruction", ""), kind, tuple(e.get("blended_word", "").split()),
                             e["mask"], extra))
    return items[:limit] if limit else items


def background_metrics(source: Tensor, edited: Tensor, mask: Tensor) -> dict[str, float]:
    """PIE's background PSNR (dB), MSE and SSIM: images (1, 3, H, W) in [-1, 1], ``mask`` 1 = edited."""
    from inversa.core.metrics import ssim

    keep = 1 - mask.to(source)
    a, b = (source + 1) / 2 * keep, (edited + 1) / 2 * keep
    mse = float((a.double() - b.double()).pow(2).mean())
    return {"bg_psnr": 10 * np.log10(1 / mse) if mse > 0 else 1e9, "bg_mse": mse,
            "bg_ssim": float(ssim(a * 2 - 1, b * 2 - 1)[0])}


# --- the PIE-format shapes set ---------------------------------------------------------------------------------

def _bracket(caption: str, words: set[str]) -> str:
    """Square brackets round ``words`` of a caption (PIE marks the changed words so)."""
    return " ".join(f"[{w}]" if w.strip(",") in words else w for w in caption.split())


def shapes_edits(spec, rng: np.random.Generator):
    """(kind, target spec, blended words) of the four edit kinds of one shapes spec."""
    from dataclasses import replace

    from inversa.tiny import shapes as S

    used = {spec.colour, *spec.bg_colours}
    colour = str(rng.choice([c for c in S.COLOURS if c not in used]))
    shape = str(rng.choice([s for s in S.SHAPES if s != spec.shape]))
    position = str(rng.choice([p for p in S.POSITIONS if p != spec.position]))
    bg = str(rng.choice([c for c in S.COLOURS if c not in used]))
    dx, dy = spec.cx - S.POSITIONS[spec.position][0], spec.cy - S.POSITIONS[spec.position][1]
    moved = replace(spec, position=position, cx=S.POSITIONS[position][0] + dx, cy=S.POSITIONS[position][1] + dy)
    return [("colour", replace(spec, colour=colour), (spec.shape, spec.shape)),
            ("shape", replace(spec, shape=shape), (spec.shape, shape)),
            ("position", moved, (spec.shape, spec.shape)),
            ("background", replace(spec, background="plain", bg_colours=(bg,)), ("background", "background"))]


def write_shapes_pie(folder: str, n: int = 4, seed: int = 1, size: int = SIDE,
                     kinds: tuple[str, ...] = tuple(SHAPES_TYPES)) -> str:
    """A PIE-Bench folder of ``n`` shapes images x one edit of each kind; returns the mapping file's path.

    Masks mark what the edit touches: the object before and after (colour, shape,
    position), or all but the object (background). Keys ``x_kind``, ``x_source_mask``,
    ``x_target_mask`` (RLE) and ``x_target_caption`` are the truth, which PIE itself does not have.
    """
    from PIL import Image

    from inversa.tiny import shapes as S

    rng = np.random.default_rng(seed + 1)
    os.makedirs(os.path.join(folder, "annotation_images"), exist_ok=True)
    mapping = {}
    for k, item in enumerate(S.dataset(n, seed=seed, split="train")):
        name = f"shapes_{k:04d}.png"
        Image.fromarray(S.render(item.spec, size)[0]).save(os.path.join(folder, "annotation_images", name))
        old = S.render(item.spec, SIDE)[1]
        for kind, target, words in shapes_edits(item.spec, rng):
            if kind not in kinds:
                continue
            new = S.render(target, SIDE)[1]
            edited = ~old if kind == "background" else old | new
            changed = set(item.caption.split()) ^ set(target.caption.split())
            mapping[f"{k:04d}_{kind}"] = {
                "image_path": name, "original_prompt": _bracket(item.caption, changed),
                "editing_prompt": _bracket(target.caption, changed),
                "editing_instruction": f"change the {kind} to {target.caption}", "editing_type_id": SHAPES_TYPES[kind],
                "blended_word": " ".join(words), "mask": encode_rle(edited),
                "x_kind": kind, "x_target_caption": target.caption, "x_source_mask": encode_rle(old),
                "x_target_mask": encode_rle(new)}
    path = os.path.join(folder, "mapping_file.json")
    with open(path, "w") as f:
        json.dump(mapping, f)
    return path


def main(argv=None) -> int:
    """``python -m inversa.bench.pie DIR --n 8``: write the PIE-format shapes set."""
    import argparse

    p = argparse.ArgumentParser(description="write a PIE-Bench-format set of shapes edits (colour, shape, position, "
                                            "background) for inversa's embedded model")
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=8, help="images (one edit of each kind each)")
    p.add_argument("--seed", type=int, default=1, help="shapes seed (the embedded model trained on seed 0)")
    p.add_argument("--size", type=int, default=64, help="image size (masks are always 512 x 512, as in PIE)")
    args = p.parse_args(argv)
    print(write_shapes_pie(args.folder, args.n, args.seed, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
