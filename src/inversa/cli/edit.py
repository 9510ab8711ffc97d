"""``inversa edit``: a source image to a target prompt (:func:`inversa.editing.edit.edit`)."""
from __future__ import annotations

import argparse

import torch
from torch import Tensor

from inversa.editing.attention import injection_kind
from inversa.editing.edit import edit
from inversa.editing.recipes import RECIPES
from inversa.models.model import image_size


def read_mask(path: str, size) -> Tensor:
    """A mask image (white = edit) as (1, 1, H, W) in [0, 1] at the image's size."""
    import numpy as np

    from inversa.io.images import read_image

    gray = torch.from_numpy(np.asarray(read_image(path), dtype=np.float32).mean(-1))[None, None]  # [0, 1]
    return torch.nn.functional.interpolate(gray, size=tuple(size), mode="area").clamp(0, 1)


def run(args) -> int:
    import os
    import sys

    from inversa.cli.common import decoder_request, open_model, parse_options, print_notes
    from inversa.core.metrics import psnr
    from inversa.io.images import load_image, save_image
    from inversa.io.outputs import staged
    from inversa.io.prompts import prompt_notes

    decoder_inversion = decoder_request(args)
    model = open_model(args)
    from inversa.cli import video as video_cli

    if getattr(model, "video", False):
        return video_cli.run_edit(args, model, decoder_inversion)
    video_cli.refuse_clips(model, [args.image])
    if args.model is None and not args.literal:  # the embedded model knows one caption template
        from inversa.tiny.prompts import template_pair

        mapped = template_pair(args.source_prompt, args.target_prompt)
        if mapped != (args.source_prompt, args.target_prompt):
            print(f"note: prompts in the embedded model's template: '{mapped[0]}' -> '{mapped[1]}' (--literal keeps "
                  "yours)", file=sys.stderr)
        args.source_prompt, args.target_prompt = mapped
    notes: list[str] = []
    image = load_image(args.image, image_size(model, args.size), notes)
    print_notes(notes + prompt_notes(model, [args.source_prompt, args.target_prompt, args.negative or ""]))
    mask = None if args.mask is None else read_mask(args.mask, image.shape[-2:])
    result = edit(model, image, args.source_prompt, args.target_prompt, method=args.method, steps=args.steps,
                  guidance=args.guidance, inversion_guidance=args.inversion_guidance, negative=args.negative,
                  cross_replace=args.cross_replace, self_replace=args.self_replace, blend=args.blend, mask=mask,
                  blend_threshold=args.blend_threshold, spacing=args.spacing, full=True,
                  decoder_inversion=decoder_inversion, **parse_options(args.opt))
    kind = "recipe" if args.method in RECIPES else injection_kind(model)
    if kind is None and (args.cross_replace or args.self_replace):
        print("note: attention injection needs a UNet or MMDiT model; edited without it", file=sys.stderr)
    elif kind == "kv" and args.cross_replace and not args.self_replace:
        print("note: MMDiT transformers have no cross-attention maps; --self-replace F shares the source's "
              "keys and values for the first F of the steps", file=sys.stderr)
    root, ext = os.path.splitext(args.output)
    with staged() as stage:  # the edit and its source branch appear together
        save_image(result.images[0], stage(args.output))
        save_image(result.source[0], stage(f"{root}_source{ext}"))
    print(f"{args.method}: '{args.source_prompt}' -> '{args.target_prompt}'  guidance {args.guidance}  "
          f"source-branch psnr {float(psnr(image, result.source)[0]):.2f} dB  -> {args.output}")
    return 0


EMBEDDED_HELP = """the embedded model (no --model) was trained on one caption template:
  "a SIZE COLOUR SHAPE on a BACKGROUND background, POSITION"
  SIZE small | large; COLOUR red green blue yellow orange purple white black;
  SHAPE circle square triangle star diamond; BACKGROUND a colour, "COLOUR gradient" or
  "COLOUR and COLOUR" (two-tone); POSITION center | top left | top right | bottom left | bottom right.
Other phrasings ("a red circle on a blue background") are mapped onto it: missing parts of the
source prompt default to large, center, plain blue background, and the target prompt takes
what it leaves out from the source. --literal passes prompts unchanged.
Keep the background: --blend "SRC_WORD TGT_WORD" edits only where those words attend
(prompt-to-prompt local blend), --mask FILE only inside a mask (white = edit)."""


def add_command(sub) -> None:
    from inversa.cli.common import add_decoder_args, add_model_args, add_video_args

    p = sub.add_parser("edit", help="edit an image from a source prompt to a target prompt",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EMBEDDED_HELP)
    p.add_argument("image", help="image file (video model: a clip, video file or folder of frames)")
    p.add_argument("--source-prompt", "-s", required=True, help="prompt describing the image")
    p.add_argument("--target-prompt", "-t", required=True, help="prompt describing the edit")
    add_model_args(p)
    p.add_argument("--method", default="ddim", help="inversion method or editing recipe (see `inversa methods`)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=7.5, help="sampling guidance w")
    from inversa.methods import REGISTRY, available

    declared = lambda field, value: "/".join(m for m in available() if getattr(REGISTRY[m], field) == value)  # noqa: E731
    p.add_argument("--inversion-guidance", type=float, default=None,
                   help=f"guidance while inverting (default: w for {declared('guided', True)}, else 1)")
    p.add_argument("--negative", default=None,
                   help="target branch negative prompt (default: the inversion's unconditional prompt if it "
                        "inverted under guidance, else the empty prompt; "
                        f"{declared('target_negative', 'source')}: the source prompt)")
    p.add_argument("--cross-replace", type=float, default=0.4,
                   help="fraction of steps with cross-attention injection (keeps the layout; with --mask, 0 lets "
                        "objects move)")
    p.add_argument("--self-replace", type=float, default=0.0,
                   help="fraction of steps with self-attention injection (MMDiT: source keys/values shared)")
    p.add_argument("--blend", default=None, metavar="'SRC TGT'",
                   help="local blend (UNet): edit only where these source/target words attend, keep the rest")
    p.add_argument("--mask", default=None, metavar="FILE", help="mask image, white = edit: keep the rest of the image")
    p.add_argument("--blend-threshold", type=float, default=0.5, help="attention level (0-1) of the --blend region")
    p.add_argument("--literal", action="store_true", help="embedded model: pass prompts unmapped")
    p.add_argument("--spacing", default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="method option, repeatable")
    add_decoder_args(p)
    add_video_args(p)
    p.add_argument("--output", "-o", default="edited.png",
                   help="edited image (source branch beside it); a clip: .mp4 or a folder of frames (x.png -> x/)")
    p.set_defaults(run=run)
