"""Reading images for inversion: one clear error for anything we cannot read faithfully."""
from __future__ import annotations

import os
from struct import error as struct_error

import numpy as np
import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.io.outputs import staged


CROPS = ("center", "resize")
MIN_SIDE = 8  # pixels; smaller images hold too little to invert


def load_image(path: str, size: int | None = None, notes: list | None = None) -> Tensor:
    """Image file -> (1, 3, H, W) tensor in [-1, 1]; ``size`` centre-crops to a square and resizes (see ``notes``)."""
    from inversa.core.checks import size as checked_size

    if size:
        checked_size(size)  # before any upscaling allocates
    arr = read_image(path, notes)
    if notes is not None and size:
        notes.extend(sizing_notes(os.path.basename(path), *arr.shape[:2], size))
    return to_tensor(arr, size)


def sizing_notes(name: str, height: int, width: int, size: int) -> list[str]:
    """What ``to_tensor(..., size)`` with the centre crop does to an image that is not ``size`` x ``size``."""
    side, out = min(height, width), []
    if height != width:
        out.append(f"{name}: {width}x{height} centre-cropped to {side}x{side} "
                   f"({abs(width - height)} px of its {'width' if width > height else 'height'} cut)")
    if side != size:
        out.append(f"{name}: {'upscaled' if side < size else 'downscaled'} {_ratio(size / side)}x "
                   f"from {side}x{side} to {size}x{size}")
    return out


def _ratio(r: float) -> str:
    """A scale factor with the digits that tell it from 1 (65/64 is 1.02x, not 1.0x)."""
    for digits in (1, 2, 3, 4):
        text = f"{r:.{digits}f}"
        if float(text) != 1.0:
            return text
    return f"{r:.4f}"


def read_image(path: str, notes: list | None = None) -> np.ndarray:
    """Image file -> HxWx3 float RGB in [0, 1].

    Grayscale is repeated to RGB, RGBA is composited over white and 16-bit data is
    scaled by its true range (a plain ``convert('RGB')`` would clip it); each such
    conversion is reported in ``notes``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from inversa.core.checks import regular_file

    regular_file(path, "image file")  # stat first: a fifo or device is never opened
    notes = notes if notes is not None else []
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < MIN_SIDE or im.height < MIN_SIDE:
                raise InversaError(f"{path} is {im.width}x{im.height} pixels; inversa needs at least {MIN_SIDE} a side")
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"{os.path.basename(path)}: animated image with {im.n_frames} frames; "
                             "only the first is used")
            orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation: 1 = as stored
            if orientation not in (None, 1):
                turned = ImageOps.exif_transpose(im)
                notes.append(f"{os.path.basename(path)}: EXIF orientation {orientation} applied "
                             f"({im.width}x{im.height} stored, {turned.width}x{turned.height} shown)")
                return _to_rgb(turned, notes)
            return _to_rgb(im, notes)
    except Image.DecompressionBombError as exc:
        raise InversaError(f"{path}: {exc}") from None
    except UnidentifiedImageError:
        raise InversaError(f"{path} is not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError,
            struct_error, ZeroDivisionError, MemoryError) as exc:  # what damaged files make PIL's decoders raise
        raise InversaError(f"{path} is a corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def _to_rgb(im, notes: list) -> np.ndarray:
    """Float RGB array in [0, 1] from any PIL mode we understand."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        notes.append(f"{mode} grayscale image scaled by 1/{int(peak)} and repeated to RGB")
        arr = np.clip(arr / peak, 0, 1)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        raise InversaError("floating-point images are not supported; save the image as 8- or 16-bit PNG")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        if mode in ("LA", "La"):
            notes.append("grayscale+alpha (LA) image repeated to RGB")
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:4]
        notes.append("transparent pixels composited over white" if (alpha < 1).any()
                     else f"{mode} image: its alpha channel (fully opaque) dropped")
        return rgba[..., :3] * alpha + (1 - alpha)
    if mode in ("L", "1"):
        notes.append("grayscale image repeated to RGB")
    if mode not in ("L", "1", "CMYK", "RGB", "P"):
        notes.append(f"{mode} image converted to RGB")
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def to_tensor(arr: np.ndarray, size: int | None = None, crop: str = "center") -> Tensor:
    """HxWx3 array in [0, 1] (or uint8) -> (1, 3, H, W) in [-1, 1], optionally made ``size`` x ``size``:
    ``center`` crops the largest centred square first, ``resize`` squashes the whole image."""
    if crop not in CROPS:
        raise InversaError(f"unknown crop policy {crop!r}; expected one of {', '.join(CROPS)}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(arr)).float().permute(2, 0, 1)[None]
    if size:
        h, w = x.shape[-2:]
        if crop == "center":
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[..., top:top + side, left:left + side]
        if tuple(x.shape[-2:]) != (size, size):
            shrink = min(x.shape[-2:]) > size
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=shrink,
                                                align_corners=False).clamp(0, 1)
    return x * 2 - 1


def to_uint8(x: Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [-1, 1] -> HxWx3 uint8 array."""
    x = x[0] if x.ndim == 4 else x
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def save_image(x: Tensor, path: str) -> str:
    """(3, H, W) or (1, 3, H, W) tensor in [-1, 1] -> PNG file."""
    from PIL import Image

    with staged() as stage:
        Image.fromarray(to_uint8(x)).save(stage(path))  # the temporary name keeps the extension, so the format
    return path


def as_images(image, size: int | None) -> Tensor:
    """A path, a list of paths or a tensor as a (B, 3, H, W) batch in [-1, 1] (or (B, 3, F, H, W) clips)."""
    if isinstance(image, Tensor):
        return image if image.ndim in (4, 5) else image[None]  # (B, 3, H, W) images or (B, 3, F, H, W) clips
    if isinstance(image, str):
        return load_image(image, size)
    if isinstance(image, (list, tuple)):
        return torch.cat([as_images(i, size) for i in image])
    raise InversaError(f"cannot invert an object of type {type(image).__name__}; give a path or a tensor")
