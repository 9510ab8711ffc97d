"""``inversa interpolate``: frames between two images (:func:`inversa.editing.interpolate.interpolate`)."""
from __future__ import annotations

import torch

from inversa.editing.interpolate import interpolate
from inversa.models.model import image_size


def run(args) -> int:
    import os

    from inversa.cli.common import open_model, parse_options, print_notes
    from inversa.io.images import load_image, save_image
    from inversa.io.outputs import staged
    from inversa.io.prompts import prompt_notes

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
    from inversa.cli.common import add_model_args

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
