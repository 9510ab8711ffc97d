"""Benchmark datasets: image folders (with optional captions) and built-in offline sets.

Every dataset is a list of :class:`Item` with a stable ``id`` (the key in the results
store) and a ``load(size, crop)`` that returns a (1, 3, S, S) tensor in [-1, 1] or raises
:class:`InversaError` (a corrupt file becomes a failed row, not a crashed run).
Resolution and crop policy are explicit: ``center`` crops the largest centred square
and resizes it (bicubic, antialiased when shrinking); ``resize`` squashes the whole image
to the square without cropping.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import Tensor

from ..errors import InversaError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


@dataclass
class Item:
    id: str
    caption: str = ""
    source: str = ""
    array: Callable[[], np.ndarray] | None = field(default=None, repr=False)  # HxWx3 in [0,1] or uint8

    def load(self, size: int, crop: str = "center") -> Tensor:
        """The image at ``size`` x ``size`` under the ``crop`` policy, in [-1, 1]."""
        from ..images import read_image, to_tensor

        if self.array is None:
            return to_tensor(read_image(self.source), size, crop)
        arr = self.array()  # built-in arrays may be grayscale or carry alpha
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return to_tensor(arr[..., :3], size, crop)


@dataclass
class Dataset:
    name: str
    items: list[Item]
    source: str = ""  # what the images are: builtin:NAME or a folder's real path (part of the config hash)

    def __len__(self) -> int:
        return len(self.items)


# captions ------------------------------------------------------------------------------------------------------

def read_captions(path: str) -> dict[str, str]:
    """File name -> caption, from a text file or JSON.

    Text: one ``file<TAB>caption`` (or ``file|caption``) per line, ``#`` comments.
    JSON: ``{"file": "caption"}``, a list of ``{"file_name"|"image": ..., "caption": ...}``,
    or the COCO captions format (``images`` with ``id``/``file_name`` and ``annotations``
    with ``image_id``/``caption``; the first caption of each image is used).
    """
    if not os.path.isfile(path):
        raise InversaError(f"captions file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InversaError(f"captions file {path} is not valid JSON ({exc})") from None
        return _captions_from_json(data, path)
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else "|" if "|" in line else None
        if sep is None:
            raise InversaError(f"{path}:{n}: expected 'file<TAB>caption' or 'file|caption'")
        name, caption = line.split(sep, 1)
        out[name.strip()] = caption.strip()
    return out


def _captions_from_json(data, path: str) -> dict[str, str]:
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {img["id"]: img["file_name"] for img in data["images"]}
        out: dict[str, str] = {}
        for ann in data["annotations"]:
            name = names.get(ann.get("image_id"))
            if name is not None and name not in out:
                out[name] = str(ann.get("caption", "")).strip()
        return out
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return dict(data)
    if isinstance(data, list):
        out = {}
        for entry in data:
            name = entry.get("file_name") or entry.get("image") or entry.get("file") if isinstance(entry, dict) else None
            if name is None:
                break
            out.setdefault(name, str(entry.get("caption", "")).strip())
        else:
            return out
    raise InversaError(f"captions file {path}: expected COCO captions, {{file: caption}} or a list of "
                       "{file_name, caption} objects")


def _lookup(captions: dict[str, str], rel: str) -> str:
    base = os.path.basename(rel)
    for key in (rel, base, os.path.splitext(base)[0]):
        if key in captions:
            return captions[key]
    return ""


# datasets ------------------------------------------------------------------------------------------------------

def folder(path: str, captions: str | None = None) -> Dataset:
    """Every image file under ``path`` (recursive, sorted); captions from ``captions`` or
    ``captions.json`` / ``captions.txt`` in the folder when present."""
    if not os.path.isdir(path):
        raise InversaError(f"dataset folder {path} does not exist")
    files = sorted(os.path.relpath(os.path.join(root, f), path)
                   for root, _, names in os.walk(path) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise InversaError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    if captions is None:
        for name in ("captions.json", "captions.txt"):
            if os.path.isfile(os.path.join(path, name)):
                captions = os.path.join(path, name)
                break
    caps = read_captions(captions) if captions else {}
    items = [Item(rel.replace(os.sep, "/"), _lookup(caps, rel), os.path.join(path, rel)) for rel in files]
    return Dataset(os.path.basename(os.path.normpath(path)), items)


# name, loader, caption: real photographs bundled with scikit-image / scikit-learn ("novel samples")
PHOTOS = {
    "astronaut": ("skimage", "astronaut", "a portrait of an astronaut in a spacesuit in front of a flag"),
    "coffee": ("skimage", "coffee", "a cup of coffee on a saucer"),
    "chelsea": ("skimage", "chelsea", "a ginger cat"),
    "rocket": ("skimage", "rocket", "a rocket on a launch pad"),
    "immunohistochemistry": ("skimage", "immunohistochemistry", "a microscope image of stained tissue"),
    "hubble_deep_field": ("skimage", "hubble_deep_field", "galaxies in the deep sky"),
    "motorcycle": ("skimage", "stereo_motorcycle", "a red motorcycle in a garage"),
    "camera": ("skimage", "camera", "a black and white photo of a cameraman"),
    "china": ("sklearn", "china.jpg", "a chinese temple among trees"),
    "flower": ("sklearn", "flower.jpg", "a close-up of a flower"),
}


def _photo_array(source: str, name: str) -> np.ndarray:
    if source == "skimage":
        from skimage import data

        arr = getattr(data, name)()
        return arr[0] if isinstance(arr, tuple) else arr
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def photos() -> Dataset:
    items = [Item(f"photos/{key}", caption, f"{src}:{name}", lambda s=src, n=name: _photo_array(s, n))
             for key, (src, name, caption) in PHOTOS.items()]
    return Dataset("photos", items)


def shapes(count: int = 8, seed: int = 0) -> Dataset:
    """Captioned images of the embedded model's training distribution, from :mod:`inversa.tiny.shapes`.

    Uses ``inversa.tiny.shapes.dataset(n, seed=...)`` (samples with ``.image`` HxWx3 uint8 and
    ``.caption``); imported lazily so a missing module gives one clear error.
    """
    try:
        import importlib

        mod = importlib.import_module("inversa.tiny.shapes")
    except ImportError as exc:
        raise InversaError("builtin:shapes needs the embedded model's dataset module inversa.tiny.shapes, "
                           f"which is not available in this installation ({exc}); use builtin:photos or a folder") \
            from None
    if not hasattr(mod, "dataset"):
        raise InversaError("inversa.tiny.shapes has no dataset(n, seed) function; cannot build builtin:shapes")
    samples = mod.dataset(count, seed=seed)
    items = [Item(f"shapes/{k:04d}", str(getattr(s, "caption", "")), f"inversa.tiny.shapes seed {seed} #{k}",
                  lambda a=_as_array(s.image): a) for k, s in enumerate(samples)]
    return Dataset("shapes", items)


def _as_array(im) -> np.ndarray:
    if isinstance(im, Tensor):
        x = im.detach().float().cpu()
        x = x[0] if x.ndim == 4 else x
        return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy().astype(np.float64)
    return np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)


BUILTIN = {"photos": photos, "shapes": shapes}


def pie_images(path: str) -> Dataset:
    """The distinct images of a PIE-Bench folder, captioned with their original prompts."""
    from .pie import load_pie

    seen: dict[str, Item] = {}
    for e in load_pie(path):
        seen.setdefault(e.image_path, Item(os.path.relpath(e.image_path, path), e.source_prompt, e.image_path))
    return Dataset(os.path.basename(os.path.normpath(path)), list(seen.values()))


def open_dataset(spec: str, captions: str | None = None, limit: int | None = None) -> Dataset:
    """``builtin:NAME`` or a folder path -> Dataset (first ``limit`` items when given)."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN:
            raise InversaError(f"unknown built-in dataset {name!r}; available: {', '.join(sorted(BUILTIN))}")
        ds = BUILTIN[name]()
        ds.source = spec
        if captions:
            caps = read_captions(captions)
            for item in ds.items:
                item.caption = _lookup(caps, item.id.split("/", 1)[1]) or item.caption
    elif spec.startswith("pie:"):
        ds = pie_images(spec[4:])
    else:
        ds = folder(spec, captions)
        ds.source = os.path.realpath(spec)
    if limit:
        ds.items = ds.items[:limit]
    return ds
