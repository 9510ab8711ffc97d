"""Editing benchmark on the embedded model's shapes data, where the truth is known.

Each image of ``inversa.tiny.shapes`` gets two edits: the colour or the shape named in its
caption changes, and the generator renders the true result. Per method:
- background preservation: PSNR and SSIM outside the edited region (source and target
  masks, dilated), against the input;
- edit success: colour edits, the median colour inside the target shape is nearest the
  target colour; shape edits, the segmented object overlaps the target shape more than
  the source shape;
- structure change: mean absolute difference of Sobel gradient magnitudes (x100);
- PSNR to the rendered truth, and source-branch PSNR (regeneration of the input).
With ``--out`` it writes OUT.md (table), OUT.json (every row) and OUT.png (gallery).

    PYTHONPATH=src python benchmarks/edit_bench.py --n 8 --steps 10 --out runs/edit_bench
    PYTHONPATH=src python benchmarks/edit_bench.py --model random-sd --n 1 --steps 2   # harness check
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inversa.core.metrics import psnr, ssim_map
from inversa.tiny import shapes as S

METHODS = ("ddim", "negative_prompt", "null_text", "direct", "edict", "bdia", "ddpm_edit_friendly", "ddcm",
           "guide_and_rescale")
METHODS += ("cfgpp", "spdinv", "spdinv, negative = source", "spdinv + prox 0.7 + pull 1", "dci", "prompt_tuning")
METHOD_OPTS = {"null_text": {"iters": 5, "lr": 0.05}, "prompt_tuning": {"iters": 5, "lr": 0.05}}
# rows that run a method with editing options: label -> (method, edit keywords)
# ("{source}": the task's source caption)
VARIANTS = {"spdinv, negative = source": ("spdinv", {"negative": "{source}"}),
            "spdinv + prox 0.7 + pull 1": ("spdinv", {"prox": 0.7, "pull": 1.0})}
PALETTE = {name: np.asarray(rgb, np.float64) / 255 for name, rgb in S.COLOURS.items()}


@dataclass
class Task:
    """One edit of one image: the input, its caption and mask, and the rendered truth of the edit."""

    kind: str  # "colour" or "shape"
    image: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    mask: np.ndarray
    caption: str
    background: np.ndarray  # the background alone, (H, W, 3) in [0, 1]
    target: str
    colour: str
    target_mask: np.ndarray
    target_image: torch.Tensor


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)[None] / 127.5 - 1


def tasks(n: int, seed: int) -> list[Task]:
    """Two edits (colour, shape) of each of ``n`` shapes images, targets drawn by ``seed``."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for item in S.dataset(n, seed=seed, split="train"):
        spec = item.spec
        colours = [c for c in S.COLOURS if c != spec.colour and c not in spec.bg_colours]
        new_shapes = [s for s in S.SHAPES if s != spec.shape]
        for kind, new in (("colour", dataclasses.replace(spec, colour=str(rng.choice(colours)))),
                          ("shape", dataclasses.replace(spec, shape=str(rng.choice(new_shapes))))):
            image, mask = S.render(new)
            out.append(Task(kind, _tensor(item.image), item.mask, item.caption, S.background(spec) / 255,
                            new.caption, new.colour, mask, _tensor(image)))
    return out


# --- metrics ------------------------------------------------------------------------------------
def _gradient(img: torch.Tensor) -> torch.Tensor:
    gray = ((img[0].double() + 1) / 2).mean(0)[None, None]
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)[None, None]
    gx = F.conv2d(F.pad(gray, [1] * 4, mode="replicate"), kx)
    gy = F.conv2d(F.pad(gray, [1] * 4, mode="replicate"), kx.transpose(-1, -2))
    return (gx**2 + gy**2).sqrt()[0, 0]


def score(task: Task, edited: torch.Tensor, source: torch.Tensor) -> dict:
    """Background preservation, edit success, structure change and PSNRs of one edited image."""
    original = task.image
    bg = torch.from_numpy(~S.dilate(task.mask | task.target_mask, 2))
    err = ((edited[0] - original[0]) / 2).pow(2).mean(0)[bg].mean()
    out = {"kind": task.kind, "bg_psnr": float(-10 * torch.log10(err.clamp_min(1e-12))),
           "bg_ssim": float(ssim_map(original, edited)[0][bg].mean()),
           "structure": 100 * float((_gradient(edited) - _gradient(original)).abs().mean()),
           "truth_psnr": float(psnr(edited, task.target_image)[0]), "src_psnr": float(psnr(source, original)[0])}
    rgb = ((edited[0].double() + 1) / 2).permute(1, 2, 0).numpy()
    if task.kind == "colour":
        inner = ~S.dilate(~task.target_mask, 1)
        median = np.median(rgb[inner if inner.any() else task.target_mask], axis=0)
        out["success"] = float(min(PALETTE, key=lambda c: np.sum((median - PALETTE[c]) ** 2)) == task.colour)
    else:
        near = np.sum((rgb - PALETTE[task.colour]) ** 2, -1) < np.sum((rgb - task.background) ** 2, -1)
        obj = near & S.dilate(task.mask | task.target_mask, 4)
        out["success"] = float(S.iou(obj, task.target_mask) > S.iou(obj, task.mask))
    return out


# --- runner -----------------------------------------------------------------------------------------
def open_model(spec: str | None, dtype: str):
    from inversa import load_model
    from inversa.tiny import default_model_path

    if spec == "random-sd":
        import tempfile

        from inversa.tiny.random_pipelines import save_pipeline

        spec = save_pipeline("sd", tempfile.mkdtemp(prefix="edit-bench-"))
    return load_model(spec or default_model_path(), dtype=dtype)


def run(args) -> tuple[dict, list[Task], dict]:
    """Every method on every task; returns (report, tasks, edited images per method)."""
    from tqdm.auto import tqdm

    from inversa.editing.edit import edit

    model = open_model(args.model, args.dtype)
    work = tasks(args.n, args.seed)
    rows, images = {"vae round trip (ceiling)": []}, {}
    with torch.no_grad():  # the best any method can do: decode(encode(image)), unedited
        for task in work:
            start = time.perf_counter()
            rt = model.decode(model.encode(task.image))
            rows["vae round trip (ceiling)"].append({**score(task, rt, rt), "seconds": time.perf_counter() - start,
                                                     "nfe": 0})
    stages = [("", {})] + ([(" + decoder inversion", {"decoder_inversion": True})] if args.decoder_inversion else [])
    for name in args.methods:
        method, options = VARIANTS.get(name, (name, {}))
        for suffix, extra in stages:
            label = name + suffix
            rows[label], images[label] = [], []
            for task in tqdm(work, desc=label, leave=False):
                start, model.nfe = time.perf_counter(), 0
                res = edit(model, task.image, task.caption, task.target, method=method, steps=args.steps,
                           guidance=args.guidance, cross_replace=args.cross_replace,
                           self_replace=args.self_replace, full=True,
                           **METHOD_OPTS.get(method, {}), **extra,
                           **{k: task.caption if v == "{source}" else v for k, v in options.items()})
                rows[label].append({**score(task, res.images, res.source), "seconds": time.perf_counter() - start,
                                    "nfe": model.nfe})
                images[label].append(res.images[0])
    config = {k: v for k, v in vars(args).items() if k != "out"}
    return {"config": config, "tasks": [[t.caption, t.target] for t in work], "results": rows}, work, images


def table(report: dict) -> str:
    lines = ["| method | bg PSNR (dB) | bg SSIM | colour success | shape success | structure x100 | "
             "PSNR to truth (dB) | source PSNR (dB) | s/edit | NFE/edit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, per in report["results"].items():
        def mean(key, kind=None):
            vals = [r[key] for r in per if key in r and (kind is None or r["kind"] == kind)]
            return float(np.mean(vals)) if vals else float("nan")

        lines.append(f"| {method} | {mean('bg_psnr'):.2f} | {mean('bg_ssim'):.3f} | "
                     f"{100 * mean('success', 'colour'):.0f}% | {100 * mean('success', 'shape'):.0f}% | "
                     f"{mean('structure'):.2f} | {mean('truth_psnr'):.2f} | {mean('src_psnr'):.2f} | "
                     f"{mean('seconds'):.2f} | {mean('nfe'):.0f} |")
    cfg = report["config"]
    head = (f"model {cfg['model'] or 'embedded'}, {cfg['n']} shapes images (seed {cfg['seed']}) x 2 edits, "
            f"{cfg['steps']} steps, guidance {cfg['guidance']}, cross_replace {cfg['cross_replace']}, "
            f"self_replace {cfg.get('self_replace', 0.0)}, "
            f"dtype {cfg['dtype']}, options {METHOD_OPTS}; NFE = network rows evaluated per edit "
            "(forward; guide_and_rescale also backpropagates 2 rows per step; ceiling row: none)")
    return head + "\n\n" + "\n".join(lines)


def gallery(work: list[Task], images: dict, path: str, rows: int = 6) -> None:
    """One row per edit: input, rendered truth, then each method's result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("input", [t.image[0] for t in work]), ("truth", [t.target_image[0] for t in work]), *images.items()]
    rows = min(rows, len(work))
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.3 * len(cols), 1.45 * rows), dpi=80, squeeze=False)
    for r in range(rows):
        for c, (name, column) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(((column[r].permute(1, 2, 0).float() + 1) / 2).clamp(0, 1).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace("_", " "), fontsize=7)
        axes[r, 0].set_ylabel(work[r].target.split(" on ")[0].removeprefix("a "), fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)  # a few flat colours: small file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="diffusers folder (default: embedded model); 'random-sd' = tiny random")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--n", type=int, default=8, help="number of shapes images (2 edits each)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--cross-replace", type=float, default=0.4)
    p.add_argument("--self-replace", type=float, default=0.0,
                   help="fraction of steps with self-attention maps (UNet) or image keys/values (MMDiT) shared")
    p.add_argument("--decoder-inversion", action="store_true",
                   help="also run every method with decoder inversion (inversa.models.decoder) before inverting")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=1, help="shapes seed (the embedded model trained on seed 0)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report, work, images = run(args)
    text = table(report)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        gallery(work, images, args.out + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
