"""Editing benchmark on synthetic shapes, where the truth is known.

Each sample is one coloured shape on a plain background with its mask and caption
("a red circle on a white background"). Two edits per sample: change the colour or
the shape named in the caption. Per method we measure
- background preservation: PSNR and SSIM outside the edited region (the source and
  target shape masks, dilated), against the input image;
- edit success: colour edits, the mean colour inside the shape is nearest to the
  target colour; shape edits, the segmented object overlaps the target shape more than
  the source shape;
- structure change: mean absolute difference of Sobel gradient magnitudes (x100);
- PSNR to the rendered truth of the edit, and source-branch PSNR (regeneration of the input).

    PYTHONPATH=src python benchmarks/edit_bench.py --model MODEL_DIR --n 8 --steps 10
    PYTHONPATH=src python benchmarks/edit_bench.py --model random-sd   # harness check, random weights
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("ddim", "negative_prompt", "null_text", "direct", "edict", "bdia", "ddpm_edit_friendly")
METHOD_OPTS = {"null_text": {"iters": 5, "lr": 0.05}}

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.25, 0.9), "yellow": (0.95, 0.85, 0.1)}
BACKGROUNDS = {"white": (0.95, 0.95, 0.95), "black": (0.05, 0.05, 0.05), "gray": (0.5, 0.5, 0.5)}
SHAPES = ("circle", "square", "triangle")

try:  # the embedded model's training data: its captions, palette, renderer and masks
    from inversa.tiny import shapes as _shapes
except ImportError:
    _shapes = None


@dataclass
class Sample:
    image: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    mask: np.ndarray  # object mask, bool (H, W)
    caption: str
    background: np.ndarray  # the background alone, (H, W, 3) in [0, 1]
    edits: list  # dicts: kind, target (caption), colour, target_mask, target_image


def _tensor(img01: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img01)).float().permute(2, 0, 1)[None] * 2 - 1


def _rgb(value):
    value = np.asarray(value, dtype=np.float64)
    return value / 255.0 if value.max() > 1.0 else value


def palette() -> dict[str, np.ndarray]:
    colours = _shapes.COLOURS if _shapes is not None else COLOURS
    return {k: _rgb(v) for k, v in colours.items()}


# --- data from the embedded model's shapes module ---------------------------------------------
def shapes_dataset(n: int, seed: int) -> list[Sample]:
    """Samples of ``inversa.tiny.shapes`` with one colour and one shape edit each, truth rendered."""
    from dataclasses import replace

    rng = np.random.default_rng(seed + 1)
    out = []
    for item in _shapes.dataset(n, seed=seed, split="train"):
        spec = item.spec
        colours = [c for c in _shapes.COLOURS if c != spec.colour and c not in spec.bg_colours]
        shapes = [s for s in _shapes.SHAPES if s != spec.shape]
        edits = []
        for kind, new in (("colour", replace(spec, colour=str(rng.choice(colours)))),
                          ("shape", replace(spec, shape=str(rng.choice(shapes))))):
            image, mask = _shapes.render(new)
            edits.append({"kind": kind, "target": new.caption, "colour": new.colour, "target_mask": mask,
                          "target_image": _tensor(image / 255.0)})
        out.append(Sample(_tensor(item.image / 255.0), item.mask, item.caption,
                          _shapes.background(spec) / 255.0, edits))
    return out


# --- fallback: a minimal local generator (used only when inversa.tiny.shapes is absent) -----------
def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius ``r`` centred at (cx, cy) on a size x size grid."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (abs(xx - cx) <= r * 0.85) & (abs(yy - cy) <= r * 0.85)
    if shape == "triangle":  # apex up
        top, bottom = cy - r, cy + r * 0.8
        half = (yy - top) / (bottom - top) * r
        return (yy >= top) & (yy <= bottom) & (abs(xx - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def _local_render(colour, shape, background, geometry, size):
    mask = shape_mask(shape, size, *geometry)
    bg = np.empty((size, size, 3))
    bg[:] = BACKGROUNDS[background]
    img = bg.copy()
    img[mask] = COLOURS[colour]
    return img, mask, bg


def local_dataset(n: int, size: int, seed: int = 0) -> list[Sample]:
    """``n`` local shape images ("a red circle on a white background") with their edits and truth."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(list(SHAPES)))
        background = str(rng.choice(list(BACKGROUNDS)))
        r = size * rng.uniform(0.2, 0.3)
        geometry = (*rng.uniform(r + 2, size - r - 2, 2), r)
        img, mask, bg = _local_render(colour, shape, background, geometry, size)
        new_colour = str(rng.choice([c for c in COLOURS if c != colour]))
        new_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        edits = []
        for kind, (c, s_) in (("colour", (new_colour, shape)), ("shape", (colour, new_shape))):
            t_img, t_mask, _ = _local_render(c, s_, background, geometry, size)
            edits.append({"kind": kind, "target": f"a {c} {s_} on a {background} background", "colour": c,
                          "target_mask": t_mask, "target_image": _tensor(t_img)})
        out.append(Sample(_tensor(img), mask, f"a {colour} {shape} on a {background} background", bg, edits))
    return out


def dataset(n: int, size: int, seed: int = 0) -> list[Sample]:
    if _shapes is not None and size == getattr(_shapes, "SIZE", size):
        return shapes_dataset(n, seed)
    return local_dataset(n, size, seed)


# --- metrics ------------------------------------------------------------------------------------
def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.max_pool2d(t, 2 * k + 1, stride=1, padding=k)[0, 0] > 0).numpy()


def _ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM (Gaussian window, same padding) on [0, 1] images, mean over channels -> (H, W)."""
    a, b = (a[0].double() + 1) / 2, (b[0].double() + 1) / 2
    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-x**2 / (2 * 1.5**2))
    g = (g / g.sum())
    k = (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.pad(t[None], [window // 2] * 4, mode="reflect"), k, groups=3)[0]

    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.mean(0)


def _gradient(img: torch.Tensor) -> torch.Tensor:
    gray = ((img[0].double() + 1) / 2).mean(0)[None, None]
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)[None, None]
    gx = F.conv2d(F.pad(gray, [1] * 4, mode="replicate"), kx)
    gy = F.conv2d(F.pad(gray, [1] * 4, mode="replicate"), kx.transpose(-1, -2))
    return (gx**2 + gy**2).sqrt()[0, 0]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / max(float(((a - b) / 2).pow(2).mean()), 1e-12))


def score(original: torch.Tensor, edited: torch.Tensor, source: torch.Tensor, sample: Sample, edit: dict) -> dict:
    region = _dilate(sample.mask | edit["target_mask"], 2)
    bg = torch.from_numpy(~region)
    diff = ((edited[0] - original[0]) / 2).pow(2).mean(0)
    bg_mse = float(diff[bg].mean()) if bg.any() else float("nan")
    out = {"bg_psnr": 10 * math.log10(1.0 / max(bg_mse, 1e-12)),
           "bg_ssim": float(_ssim_map(original, edited)[bg].mean()),
           "structure": 100 * float((_gradient(edited) - _gradient(original)).abs().mean()),
           "truth_psnr": _psnr(edited, edit["target_image"]), "src_psnr": _psnr(source, original)}
    rgb = ((edited[0].double() + 1) / 2).permute(1, 2, 0).numpy()
    colours = palette()
    if edit["kind"] == "colour":
        mean = rgb[_erode(edit["target_mask"], 1)].mean(0)
        nearest = min(colours, key=lambda c: float(np.sum((mean - colours[c]) ** 2)))
        out["success"] = float(nearest == edit["colour"])
    else:
        near_obj = np.sum((rgb - colours[edit["colour"]]) ** 2, -1) < np.sum((rgb - sample.background) ** 2, -1)
        obj = near_obj & _dilate(region, 2)
        out["success"] = float(_iou(obj, edit["target_mask"]) > _iou(obj, sample.mask))
    return out


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    inner = ~_dilate(~mask, k)
    return inner if inner.any() else mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


# --- runner -----------------------------------------------------------------------------------------
def open_model(spec: str | None, dtype: str):
    from inversa import load_model

    if spec == "random-sd":
        import tempfile

        from inversa.tiny.random_pipelines import save_pipeline

        return load_model(save_pipeline("sd", tempfile.mkdtemp(prefix="edit-bench-")), dtype=dtype)
    if spec is None:
        from inversa.tiny import default_model_path

        spec = default_model_path()
    return load_model(spec, dtype=dtype)


def run(args) -> dict:
    from inversa.edit import edit

    model = open_model(args.model, args.dtype)
    size = args.size or model.default_size()
    samples = dataset(args.n, size, args.seed)
    tasks = [(s, e) for s in samples for e in s.edits]
    rows = {"vae round trip (ceiling)": []}
    for sample, task in tasks:  # the best any method can do: decode(encode(image)), unedited
        with torch.no_grad():
            start = time.perf_counter()
            rt = model.decode(model.encode(sample.image))
        rows["vae round trip (ceiling)"].append({**score(sample.image, rt, rt, sample, task), "kind": task["kind"],
                                                 "seconds": time.perf_counter() - start})
    for method in args.methods:
        per = []
        for sample, task in tasks:
            start = time.perf_counter()
            res = edit(model, sample.image, sample.caption, task["target"], method=method, steps=args.steps,
                       guidance=args.guidance, cross_replace=args.cross_replace, full=True,
                       **METHOD_OPTS.get(method, {}))
            seconds = time.perf_counter() - start
            per.append({**score(sample.image, res.images, res.source, sample, task), "kind": task["kind"],
                        "seconds": seconds})
        rows[method] = per
        print(f"{method}: done ({len(per)} edits)", file=sys.stderr)
    data = "inversa.tiny.shapes" if _shapes is not None and size == getattr(_shapes, "SIZE", size) else "local shapes"
    return {"config": {k: v for k, v in vars(args).items() if k != "out"}, "image_size": size, "data": data,
            "results": rows}


def table(report: dict) -> str:
    lines = ["| method | bg PSNR (dB) | bg SSIM | colour success | shape success | structure x100 | "
             "PSNR to truth (dB) | source PSNR (dB) | s/edit |", "|---|---|---|---|---|---|---|---|---|"]
    for method, per in report["results"].items():
        def mean(key, kind=None):
            vals = [r[key] for r in per if kind is None or r["kind"] == kind]
            return float(np.mean(vals)) if vals else float("nan")

        lines.append(f"| {method} | {mean('bg_psnr'):.2f} | {mean('bg_ssim'):.3f} | "
                     f"{100 * mean('success', 'colour'):.0f}% | {100 * mean('success', 'shape'):.0f}% | "
                     f"{mean('structure'):.2f} | {mean('truth_psnr'):.2f} | {mean('src_psnr'):.2f} | "
                     f"{mean('seconds'):.2f} |")
    cfg = report["config"]
    head = (f"model {cfg['model'] or 'embedded'}, data {report['data']}, {report['image_size']}px, {cfg['n']} images x 2 edits, "
            f"{cfg['steps']} steps, guidance {cfg['guidance']}, cross_replace {cfg['cross_replace']}, "
            f"dtype {cfg['dtype']}, null_text {METHOD_OPTS['null_text']}")
    return head + "\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="diffusers folder (default: embedded model); 'random-sd' = tiny random")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--n", type=int, default=8, help="number of shape images (2 edits each)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--cross-replace", type=float, default=0.4)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    report = run(args)
    text = table(report)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
