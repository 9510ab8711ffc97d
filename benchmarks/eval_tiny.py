"""Measure the embedded model on held-out captions and write its model card.

For 50 captions whose (colour, shape, position) triple never occurs in training, sample
one image each and compare it with what the shapes generator draws for that caption:
- object colour: palette colour nearest the median of the caption's mask region, and
  (position-free) the most common palette colour of the pixels that are not background;
- background colour: palette colour nearest the median outside the (dilated) mask,
  per half for two-tone backgrounds;
- object mask: pixels nearer the named object colour than the named background;
  IoU with the generator's mask, IoU after centring both masks (shape alone), position
  (nearest named position to the mask centroid) and shape (the generator shape whose
  centred mask overlaps best);
- a control: the same images scored against shuffled captions (chance level).

Usage: PYTHONPATH=src python benchmarks/eval_tiny.py [--model FOLDER] [--run runs/tiny] [--write-card]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

from inversa.tiny import shapes as S


def _centred(mask: np.ndarray) -> np.ndarray:
    """The mask shifted so its centroid is the image centre (integer shift)."""
    if not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return np.roll(np.roll(mask, int(round(h / 2 - ys.mean())), 0), int(round(w / 2 - xs.mean())), 1)


def _reference_background(spec: S.ShapeSpec) -> np.ndarray:
    """Named background colour per pixel (gradient direction is not in the caption: use its mid colour)."""
    out = np.broadcast_to(np.array(S.COLOURS[spec.bg_colours[0]], float), (S.SIZE, S.SIZE, 3)).copy()
    if spec.background == "two-tone":
        out[:, S.SIZE // 2:] = S.COLOURS[spec.bg_colours[1]]
    return out


def _dominant_object_colour(img: np.ndarray, spec: S.ShapeSpec, far: float = 60.0, min_pixels: int = 10):
    """Most common palette colour among pixels that are neither near nor labelled as the named background."""
    names = list(S.COLOURS)
    palette = np.array([S.COLOURS[n] for n in names], float)
    labels = ((img[..., None, :] - palette) ** 2).sum(-1).argmin(-1)
    backgrounds = [S.background(dataclasses.replace(spec, vertical=v)) for v in (True, False)]  # either gradient way
    near_bg = np.min([((img - b) ** 2).sum(-1) for b in backgrounds], axis=0)
    fg = (near_bg > far ** 2) & ~np.isin(labels, [names.index(c) for c in spec.bg_colours])
    return names[np.bincount(labels[fg], minlength=len(names)).argmax()] if fg.sum() >= min_pixels else None


def score(image: np.ndarray, caption: str) -> dict:
    """Scores of one generated uint8 image against the caption's nominal rendering."""
    spec = S.parse_caption(caption)
    _, ref = S.render(spec)
    img = image.astype(np.float64)
    obj = np.array(S.COLOURS[spec.colour], float)
    bg = _reference_background(spec)
    pred = ((img - obj) ** 2).sum(-1) < ((img - bg) ** 2).sum(-1)
    out = dict(object_colour=S.nearest_colour(np.median(img[ref], axis=0)) == spec.colour,
               object_colour_anywhere=_dominant_object_colour(img, spec) == spec.colour)
    outside = ~S.dilate(ref, 3)
    halves = [np.ones_like(ref)] if spec.background != "two-tone" else \
        [np.arange(S.SIZE)[None, :] < S.SIZE // 2, np.arange(S.SIZE)[None, :] >= S.SIZE // 2]
    ok = []
    for colour, half in zip(spec.bg_colours, halves):
        region = outside & np.broadcast_to(half, ref.shape)
        ok.append(S.nearest_colour(np.median(img[region], axis=0)) == colour)
    out["background_colour"] = all(ok)
    out["iou"] = S.iou(pred, ref)
    out["centred_iou"] = S.iou(_centred(pred), _centred(ref))
    if pred.any():
        ys, xs = np.nonzero(pred)
        cx, cy = xs.mean(), ys.mean()
        out["position"] = min(S.POSITIONS, key=lambda p: (S.POSITIONS[p][0] - cx) ** 2 + (S.POSITIONS[p][1] - cy) ** 2) \
            == spec.position
        best = max(((shape, size) for shape in S.SHAPES for size in S.SIZES),
                   key=lambda k: S.iou(_centred(pred), _centred(S.render(S.nominal(k[0], spec.colour, k[1], "center"))[1])))
        out["shape"] = best[0] == spec.shape
    else:
        out["position"] = out["shape"] = False
    return out


def summarise(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def generate(pipe, captions: list[str], steps: int, guidance: float, seed: int, batch: int = 25) -> np.ndarray:
    out = []
    for i in range(0, len(captions), batch):
        g = torch.Generator().manual_seed(seed + i)
        res = pipe(captions[i:i + batch], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                   output_type="np", height=S.SIZE, width=S.SIZE)
        out.append((res.images * 255).round().clip(0, 255).astype(np.uint8))
    return np.concatenate(out)


def grid(images: np.ndarray, cols: int, scale: int = 1) -> np.ndarray:
    rows = [np.concatenate(list(images[r * cols:(r + 1) * cols]), 1) for r in range(len(images) // cols)]
    g = np.concatenate(rows, 0)
    return g.repeat(scale, 0).repeat(scale, 1)


def loss_curve(csv: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, list] = {}
    for line in open(csv):
        stage, step, loss, _ = line.strip().split(",")
        data.setdefault(stage, []).append((int(step), float(loss)))
    fig, axes = plt.subplots(1, len(data), figsize=(3.2 * len(data), 2.4), dpi=80)
    for ax, (stage, pts) in zip(np.atleast_1d(axes), data.items()):
        s, loss = np.array(pts).T
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(s, loss, lw=0.5, alpha=0.4)
        ax.plot(s[k - 1:], smooth, lw=1.2)
        ax.set_title(f"{stage} loss"), ax.set_xlabel("step"), ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    ap.add_argument("--run", default=None, help="training folder with losses.csv and training.json")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--write-card", action="store_true", help="write README.md, loss.png, samples.png into the model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from inversa import load_model
    from inversa.tiny import default_model_path

    folder = args.model or default_model_path()
    model = load_model(folder)
    pipe = model.pipe
    pipe.set_progress_bar_config(disable=True)
    items = S.dataset(args.count, seed=99, split="heldout")
    captions = [s.caption for s in items]
    start = time.time()
    images = generate(pipe, captions, args.steps, args.guidance, args.seed)
    seconds = time.time() - start
    rows = [score(im, c) for im, c in zip(images, captions)]
    shuffled = [score(im, captions[(i + 7) % len(captions)]) for i, im in enumerate(images)]
    truth = [score(s.image, s.caption) for s in items]
    result = dict(model=folder, count=len(captions), steps=args.steps, guidance=args.guidance,
                  sample_seconds=seconds, heldout=summarise(rows), shuffled_control=summarise(shuffled),
                  generator=summarise(truth))
    photo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "astronaut.png")
    if os.path.exists(photo):
        from inversa.core.metrics import psnr
        from inversa.io.images import load_image

        x = load_image(photo, model.default_size())
        result["vae_psnr_astronaut"] = float(psnr(x, model.decode(model.encode(x)).clamp(-1, 1)))
    print(json.dumps(result, indent=2))
    if args.write_card:
        from PIL import Image

        Image.fromarray(grid(images[:40], 10)).save(os.path.join(folder, "samples.png"), optimize=True)
        if args.run and os.path.exists(os.path.join(args.run, "losses.csv")):
            loss_curve(os.path.join(args.run, "losses.csv"), os.path.join(folder, "loss.png"))
        training = read_training(args.run, folder)
        with open(os.path.join(folder, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(card(result, training, captions[:40], pipe))
    return 0


def read_training(run: str | None, folder: str) -> dict:
    """The training record for a model card: the run's training.json, else the model folder's, else {}."""
    for src in (run and os.path.join(run, "training.json"), os.path.join(folder, "training.json")):
        if src and os.path.exists(src):
            with open(src) as f:
                return json.load(f)
    return {}


def _row(name: str, d: dict) -> str:
    return (f"| {name} | {d['object_colour']:.0%} | {d['object_colour_anywhere']:.0%} | {d['background_colour']:.0%} | {d['iou']:.2f} | "
            f"{d['centred_iou']:.2f} | {d['shape']:.0%} | {d['position']:.0%} |")


def _verdict(result: dict) -> str:
    """Which caption attributes the samples follow clearly above the shuffled-caption chance level."""
    h, c = result["heldout"], result["shuffled_control"]
    checks = {"object colour": ("object_colour_anywhere", 0.15), "background colour": ("background_colour", 0.15),
              "object size/outline (centred IoU)": ("centred_iou", 0.1), "shape": ("shape", 0.15),
              "position": ("position", 0.15)}
    learned = [name for name, (key, margin) in checks.items() if h[key] - c[key] >= margin]
    missing = [name for name in checks if name not in learned]
    if not learned:
        return ("**Status: undertrained.** The samples do not yet follow the captions (all scores at the "
                "shuffled-caption chance level); continue with `inversa train-tiny -o RUN --resume --minutes N`.")
    return (f"**Status:** the samples follow the captions' {', '.join(learned)} clearly above the shuffled-caption "
            f"chance level" + (f"; {', '.join(missing)} are still at chance at this training length (continue "
                               "with `inversa train-tiny -o RUN --resume --minutes N`)." if missing else "."))


def _unet_lines(pipe, prediction: str) -> list[str]:
    """The UNet's size, where it attends to the caption and its noise schedule, from the configs."""
    unet, sched = pipe.unet.config, pipe.scheduler.config
    size, params = unet["sample_size"], sum(p.numel() for p in pipe.unet.parameters())
    attn = [f"{size >> k}x{size >> k}" for k, b in enumerate(unet["down_block_types"]) if "CrossAttn" in b]
    zero = sched.get("rescale_betas_zero_snr", False)
    return [f"- UNet2DConditionModel ({params / 1e6:.1f} M parameters): block_out_channels "
            f"{tuple(unet['block_out_channels'])}, cross-attention at {', '.join(attn)},",
            f"  {prediction.replace('_', '-')}, SD's scaled-linear betas (0.00085-0.012, 1000 steps)"
            + (", rescaled to zero terminal SNR with trailing timesteps (Lin et al. 2024)" if zero else "") + ";"]


def card(result: dict, training: dict, captions: list[str], pipe) -> str:
    v, u = training.get("vae", {}), training.get("unet", {})
    held = sorted(S.HELDOUT)
    lines = [
        "# inversa tiny shapes model",
        "",
        "A small text-to-image latent diffusion model trained from scratch on a CPU, shipped with inversa so that",
        "`inversa invert` works offline with no download. It is a `StableDiffusionPipeline` folder (AutoencoderKL,",
        "UNet2DConditionModel, CLIPTextModel + CLIPTokenizer with its own vocabulary, DDIMScheduler) loaded with",
        "`DiffusionPipeline.from_pretrained` like any hub model. It knows only coloured shapes: do not expect it to",
        "draw anything else. Its autoencoder was also trained on real photos, so photos invert and reconstruct.",
        "",
        "## Data",
        "",
        "`inversa.tiny.shapes`: 64x64 images of one shape (" + ", ".join(S.SHAPES) + ") in one of 8 colours (" +
        ", ".join(S.COLOURS) + "), two sizes, five positions, on a plain, gradient or two-tone background,",
        "captioned like `a small red circle on a blue background, top left`, with the object mask. Item i depends",
        "only on (seed, i). These (colour, shape, position) triples never occur in training (held out for the",
        "evaluation): " + "; ".join(" ".join(t) for t in held) + ".",
        "The autoencoder saw half shapes, half random crops of the photos bundled with scikit-image and scikit-learn.",
        "",
        "## Model",
        "",
        "- VAE: AutoencoderKL, block_out_channels (16, 32), one downsampling, 4 latent channels: 64x64 RGB <-> 4x32x32;",
        f"  L1 + MSE reconstruction + 1e-4 KL; latent scaling factor {training.get('scaling_factor', float('nan')):.4f}.",
        *_unet_lines(pipe, training.get("prediction", "epsilon")),
        "  trained jointly with a 2-layer CLIPTextModel (hidden 64, 24 tokens); captions dropped to '' with",
        "  probability 0.1 for classifier-free guidance; EMA weights saved.",
        "",
        "## Training",
        "",
        "```",
        *training.get("commands", ["(command not recorded)"]),
        "```",
        "",
        f"- VAE: {v.get('steps', '?')} steps (batch 4) in {v.get('seconds', 0) / 60:.1f} min.",
        f"- UNet + text encoder: {u.get('steps', '?')} steps (batch {training.get('batch_size', '?')}) in "
        f"{u.get('seconds', 0) / 60:.1f} min, final loss {u.get('loss', float('nan')):.4f}; "
        f"{training.get('dataset_size', '?')} cached training latents.",
        f"- Hardware: CPU, {training.get('torch_threads', '?')} torch threads.",
        "",
        "![loss curve](loss.png)",
        "",
        f"## Evaluation ({result['count']} held-out captions)",
        "",
        f"`benchmarks/eval_tiny.py`: DDIM {result['steps']} steps, guidance {result['guidance']}, one sample per "
        f"caption ({result['sample_seconds']:.0f} s for all on CPU). Each sample is compared with the generator's",
        "rendering of its caption: object colour at its place = palette colour nearest the median of the caption's",
        "mask region; anywhere = most common palette colour among pixels far from and not labelled as the named",
        "background;",
        "background colour = nearest palette colour outside the mask (each half for two-tone); object mask = pixels",
        "nearer the named object colour than the named background; IoU against the generator's mask, the same",
        "after centring both masks (shape alone), shape = generator shape that best overlaps the centred mask,",
        "position = named position nearest the mask centroid. 'shuffled' scores the same samples against other",
        "captions (chance level); 'generator' scores the generator's own images (jittered position/size).",
        "",
        "| | object colour (at its place) | object colour (anywhere) | background colour | mask IoU | centred IoU | shape | position |",
        "|---|---|---|---|---|---|---|---|",
        _row("samples, held-out captions", result["heldout"]),
        _row("control: shuffled captions", result["shuffled_control"]),
        _row("generator (upper bound)", result["generator"]),
        "",
        _verdict(result),
        "",
        "![samples](samples.png)",
        "",
        "Samples, row by row (10 per row):",
        "",
    ]
    lines += [f"{i + 1}. {c}" for i, c in enumerate(captions)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
