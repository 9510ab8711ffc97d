"""Benchmark datasets: image folders (with optional captions) and built-in offline sets.

Every dataset is a list of :class:`Item` with a stable ``id`` (the key in the results
store) and a ``load(size, crop)`` that returns a (1, 3, S, S) tensor in [-1, 1] or raises
:class:`InversaError` (a corrupt file becomes a failed row, not a crashed run).
Resolution and crop policy are explicit: ``center`` crops the largest centred square
and resizes it (bicubic, antialiased when shrinking); ``resize`` squashes the whole image
to the square without cropping.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import Tensor

from inversa.core.errors import InversaError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


@dataclass
class Item:
    id: str
    caption: str = ""
    source: str = ""
    array: Callable[[], np.ndarray] | None = field(default=None, repr=False)  # HxWx3 in [0,1] or uint8

    def load(self, size: int, crop: str = "center") -> Tensor:
        """The image at ``size`` x ``size`` under the ``crop`` policy, in [-1, 1]."""
        from inversa.io.images import read_image, to_tensor

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
    """File name -> caption, from a text file or JSON (read within bounds: regular file, size, depth, UTF-8).

    Text: one ``file<TAB>caption`` (or ``file|caption``) per line, ``#`` comments.
    JSON: ``{"file": "caption"}``, a list of ``{"file_name"|"image": ..., "caption": ...}``,
    or the COCO captions format (``images`` with ``id``/``file_name`` and ``annotations``
    with ``image_id``/``caption``; the first caption of each image is used).
    """
    from inversa.core.checks import MAX_JSON_MB, read_json, read_text, regular_file

    st = regular_file(path, "captions file")
    if path.lower().endswith(".json"):
        return _captions_from_json(read_json(path, "captions file"), path)
    if st.st_size > MAX_JSON_MB * 2 ** 20:
        raise InversaError(f"captions file {path} is {st.st_size / 2 ** 20:.0f} MB, over the {MAX_JSON_MB} MB cap")
    out = {}
    for n, line in enumerate(read_text(path, "captions file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else "|" if "|" in line else None
        if sep is None:
            raise InversaError(f"{path}:{n}: expected 'file<TAB>caption' or 'file|caption'")
        name, caption = line.split(sep, 1)
        out[name.strip()] = caption.strip()
    return out


def _key(value) -> bool:
    """A COCO id: an integer or a string (not a list, dict, float or bool)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _coco(data: dict, path: str) -> dict[str, str]:
    """COCO captions, every field checked: one line naming the first entry that is not as COCO defines it."""
    images, annotations = data["images"], data["annotations"]
    for what, value in (("images", images), ("annotations", annotations)):
        if not isinstance(value, list):
            raise InversaError(f"captions file {path}: COCO {what} must be a list, not {type(value).__name__}")
    names: dict = {}
    for k, img in enumerate(images):
        if not isinstance(img, dict):
            raise InversaError(f"captions file {path}: COCO images[{k}] must be an object, not {type(img).__name__}")
        if not _key(img.get("id")):
            raise InversaError(f"captions file {path}: COCO images[{k}] needs an integer or string id, "
                               f"got {img.get('id')!r:.40}")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise InversaError(f"captions file {path}: COCO images[{k}] needs a file_name string, "
                               f"got {img.get('file_name')!r:.40}")
        names[img["id"]] = img["file_name"]
    out: dict[str, str] = {}
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise InversaError(f"captions file {path}: COCO annotations[{k}] must be an object, "
                               f"not {type(ann).__name__}")
        if not _key(ann.get("image_id")):
            raise InversaError(f"captions file {path}: COCO annotations[{k}] needs an integer or string image_id, "
                               f"got {ann.get('image_id')!r:.40}")
        if not isinstance(ann.get("caption", ""), str):
            raise InversaError(f"captions file {path}: COCO annotations[{k}] caption must be a string, "
                               f"got {ann.get('caption')!r:.40}")
        name = names.get(ann["image_id"])
        if name is not None and name not in out:
            out[name] = ann.get("caption", "").strip()
    return out


def _captions_from_json(data, path: str) -> dict[str, str]:
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco(data, path)
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return dict(data)
    if isinstance(data, list):
        out = {}
        for k, entry in enumerate(data):
            name = next((entry[key] for key in ("file_name", "image", "file") if entry.get(key)), None) \
                if isinstance(entry, dict) else None
            if not isinstance(name, str) or not isinstance(entry.get("caption", ""), str):
                raise InversaError(f"captions file {path}: entry {k} needs a file_name string and a caption string")
            out.setdefault(name, entry.get("caption", "").strip())
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
    from inversa.core.checks import inside

    files = sorted(os.path.relpath(os.path.join(root, f), path)
                   for root, _, names in os.walk(path) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    for rel in files:  # a link out of the folder would make the benchmark read (and store) a file from elsewhere
        inside(path, os.path.join(path, rel), "dataset file")
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
    from inversa.bench.pie import load_pie

    seen: dict[str, Item] = {}
    for e in load_pie(path):  # load_pie keeps every image_path inside the folder
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
