"""Reading and writing short clips: a video file (imageio + its ffmpeg) or a folder of frames, one clear error else.

Clips are tensors (B, 3, F, H, W) in [-1, 1], the layout diffusers' video VAEs take.
A video file is read whole (decoded once, frames capped by :data:`MAX_FRAMES`); a folder
is its image files in name order, which must share one size. Output goes to a video file
when the path ends in a video extension, else to a folder of numbered PNG frames (lossless).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.io.images import read_image, sizing_notes, to_tensor, to_uint8
from inversa.io.outputs import staged

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_FRAMES = 129  # HunyuanVideo's longest clip; Wan 2.1 samples 81, CogVideoX 49
DEFAULT_FPS = 16.0


def is_clip(path: str) -> bool:
    """A video file or a folder (of frames), by name: what ``inversa invert`` reads as a clip."""
    return os.path.isdir(path) or path.lower().endswith(VIDEO_EXTS)


def read_frames(path: str, frames: int | None = None, notes: list | None = None) -> tuple[list[np.ndarray], float]:
    """(HxWx3 float frames in [0, 1], fps) of a video file or a folder of frames; ``frames`` keeps the first N."""
    if frames is not None and frames < 1:
        raise InversaError(f"--frames must be at least 1, got {frames}")
    cap = frames or MAX_FRAMES
    if not os.path.exists(path):
        raise InversaError(f"video {path} does not exist")
    out, fps = (_read_folder(path, cap + 1, notes) if os.path.isdir(path) else _read_file(path, cap + 1))
    if not out:
        raise InversaError(f"video {path} holds no frames")
    if len(out) > cap and frames is None:
        raise InversaError(f"video {path} has more than {MAX_FRAMES} frames; keep the first N with --frames N")
    return out[:cap], fps


def _read_file(path: str, limit: int) -> tuple[list[np.ndarray], float]:
    import imageio.v3 as iio

    out = []
    try:
        fps = float(iio.immeta(path, plugin="FFMPEG").get("fps") or DEFAULT_FPS)
        for frame in iio.imiter(path, plugin="FFMPEG"):
            out.append(np.asarray(frame[..., :3], dtype=np.float64) / 255.0)
            if len(out) >= limit:
                break
    except Exception as exc:  # noqa: BLE001 - ffmpeg fails in many ways; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:120]
        raise InversaError(f"{path} is not a readable video (corrupt or unknown format: {first})") from None
    return out, fps


def _read_folder(path: str, limit: int, notes: list | None) -> tuple[list[np.ndarray], float]:
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTS) and not n.startswith("."))
    if not names:
        raise InversaError(f"folder {path} holds no frames (image files {', '.join(FRAME_EXTS)})")
    out = []
    for name in names[:limit]:
        frame = read_image(os.path.join(path, name), notes)
        if out and frame.shape != out[0].shape:
            raise InversaError(f"frames in {path} differ in size: {names[0]} is {out[0].shape[1]}x{out[0].shape[0]}, "
                               f"{name} is {frame.shape[1]}x{frame.shape[0]}")
        out.append(frame)
    return out, DEFAULT_FPS


def load_clip(path: str, size: int | None = None, frames: int | None = None,
              notes: list | None = None) -> tuple[Tensor, float]:
    """Video file or folder of frames -> ((1, 3, F, H, W) in [-1, 1], fps); ``size`` crops and resizes each frame."""
    arrays, fps = read_frames(path, frames, notes)
    if notes is not None and size:
        notes.extend(sizing_notes(os.path.basename(path.rstrip("/")), *arrays[0].shape[:2], size))
    clip = torch.cat([to_tensor(a, size) for a in arrays])  # (F, 3, H, W)
    return clip.permute(1, 0, 2, 3)[None], fps


def save_clip(clip: Tensor, path: str, fps: float = DEFAULT_FPS) -> str:
    """(3, F, H, W) or (1, 3, F, H, W) in [-1, 1] -> a video file (by extension) or a folder of PNG frames."""
    from PIL import Image

    clip = clip[0] if clip.ndim == 5 else clip
    frames = [to_uint8(clip[:, f]) for f in range(clip.shape[1])]
    with staged() as stage:
        if path.lower().endswith(VIDEO_EXTS):
            import imageio.v3 as iio

            iio.imwrite(stage(path), np.stack(frames), fps=fps, plugin="FFMPEG")
        else:
            for f, frame in enumerate(frames):
                Image.fromarray(frame).save(stage(os.path.join(path, f"frame_{f:04d}.png")))
    return path


def clip_output(path: str) -> str:
    """Where a clip goes for an output path named like an image (``x.png`` -> folder ``x``)."""
    root, ext = os.path.splitext(path)
    return root if ext.lower() in FRAME_EXTS else path
