"""Interpolation between two images: slerp between their inverted noises, then regenerate.

Side state that a method keeps per sample (null embeddings, noise maps, coupled
latents, offsets) is interpolated linearly beside the noise, so every method's own
sampler runs; at ``alpha`` 0 and 1 the frames are the two reconstructions.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .api import _as_images, _as_model, image_size, invert, reconstruct
from .edit import combine_state
from .errors import InversaError
from .validate import fraction
from .samplers import slerp


def interpolate(model, image_a, image_b, alphas=(0.0, 0.25, 0.5, 0.75, 1.0), prompt: str = "", *,
                method: str = "ddim", steps: int = 10, guidance: float = 1.0, size: int | None = None,
                spacing: str | None = None, decode: bool = True, **config) -> Tensor:
    """Frames (len(alphas), 3, H, W) between ``image_a`` (alpha 0) and ``image_b`` (alpha 1)."""
    model = _as_model(model)
    alphas = [fraction(a, "alpha") for a in alphas]
    if not alphas:
        raise InversaError("give at least one alpha")
    size = image_size(model, size)
    a, b = _as_images(image_a, size), _as_images(image_b, size)
    if a.shape[1:] != b.shape[1:]:
        raise InversaError(f"images A ({a.shape[-1]}x{a.shape[-2]}) and B ({b.shape[-1]}x{b.shape[-2]}) differ in "
                           "size; give --size N to bring both to N x N")
    images = torch.cat([a, b])
    if images.shape[0] != 2:
        raise InversaError("interpolate takes exactly one image A and one image B")
    inv = invert(model, images, prompt, method=method, steps=steps, guidance=guidance, spacing=spacing, **config)
    x_a, x_b = inv.x_T[:1], inv.x_T[1:]
    x_T = torch.cat([slerp(x_a, x_b, a) for a in alphas])
    frames = dataclasses.replace(inv, x_T=x_T, z0=None, trajectory=None, prompts=[prompt] * len(alphas),
                                 negative=None if inv.negative is None else [inv.negative[0]] * len(alphas),
                                 state=combine_state(inv, [(0, 1, a) for a in alphas], method))
    return reconstruct(model, frames, decode=decode)


def run(args) -> int:
    import os

    from .cli import open_model, parse_options, print_notes
    from .images import load_image, save_image
    from .outputs import staged
    from .prompts import prompt_notes

    model = open_model(args)
    size, notes = image_size(model, args.size), []
    a, b = load_image(args.image_a, size, notes), load_image(args.image_b, size, notes)
    print_notes(notes + prompt_notes(model, [args.prompt]))
    frames = interpolate(model, a, b, args.alpha, args.prompt, method=args.method, steps=args.steps,
                         guidance=args.guidance, **parse_options(args.opt))
    with staged() as stage:  # the frames and the strip appear together
        for k, alpha in enumerate(args.alpha):
            save_image(frames[k], stage(os.path.join(args.output, f"frame_{k:02d}_alpha_{alpha:.3f}.png")))
        save_image(torch.cat(list(frames), dim=-1), stage(os.path.join(args.output, "strip.png")))
    print(f"{len(args.alpha)} frames ({args.method}, {args.steps} steps) -> {args.output}")
    return 0


def add_command(sub) -> None:
    from .cli import add_model_args

    p = sub.add_parser("interpolate", help="slerp between the inverted noises of two images and regenerate")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0], help="alphas in [0, 1]")
    p.add_argument("--prompt", default="")
    add_model_args(p)
    p.add_argument("--method", default="ddim")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="method option, repeatable")
    p.add_argument("--output", "-o", default="interpolation", help="output folder")
    p.set_defaults(run=run)
