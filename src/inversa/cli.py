"""Command line: ``inversa invert | reconstruct`` (more commands register in COMMANDS)."""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import shlex
import sys
import time

from .errors import InversaError


# Modules that add a subcommand with ``add_command(subparsers)``; each sets ``run=fn(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = ("inversa.bench.cli", "inversa.tiny.train", "inversa.edit", "inversa.interpolate")


def parse_options(pairs: list[str] | None) -> dict:
    """``["iters=20", "variant=plain"]`` -> ``{"iters": 20, "variant": "plain"}``."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InversaError(f"method option {pair!r} must look like name=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def decoder_request(args) -> bool | dict:
    """``decoder_inversion`` for :func:`inversa.invert` from ``--decoder-inversion`` / ``--decoder-opt``."""
    if args.decoder_opt and not args.decoder_inversion:
        raise InversaError("--decoder-opt needs --decoder-inversion")
    from .decoder import options

    return options(parse_options(args.decoder_opt) or True) if args.decoder_inversion else False


def default_model() -> str:
    from .tiny import default_model_path

    return default_model_path()


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None, help="diffusers folder or hub id (default: the embedded model)")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 | float64")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")


def open_model(args):
    from .model import load_model

    return load_model(args.model or default_model(), dtype=args.dtype, device=args.device)


def add_invert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="ddim", help="inversion method (see `inversa methods`)")
    p.add_argument("--steps", type=int, default=10, help="inversion steps")
    p.add_argument("--prompt", default="", help="source prompt (default: empty)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale during inversion")
    p.add_argument("--negative", default="", help="unconditional / negative prompt")
    p.add_argument("--spacing", default=None, help="timestep spacing: leading | trailing | linspace")
    p.add_argument("--strength", type=float, default=1.0, help="partial inversion: fraction of the steps to invert")
    p.add_argument("--size", type=int, default=None, help="centre-crop and resize to SIZE (default: model's size; 0 keeps)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="method option, repeatable")
    add_decoder_args(p)


def add_decoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder-inversion", action="store_true",
                   help="first fit a latent whose decoding matches the image (lifts the VAE ceiling)")
    p.add_argument("--decoder-opt", action="append", metavar="NAME=VALUE",
                   help="decoder inversion option (iters, reg, tol, history_size, checkpointing), repeatable")


def run_invert(args) -> int:
    from statistics import fmean

    import torch

    from . import invert, reconstruct
    from .images import load_image, save_image
    from .metrics import summary

    decoder_inversion = decoder_request(args)  # checked before the model loads
    model = open_model(args)
    size = model.default_size() if args.size is None else (args.size or None)
    notes: list[str] = []
    images = torch.cat([load_image(path, size, notes) for path in args.images])
    for note in dict.fromkeys(notes):
        print(f"note: {note}", file=sys.stderr)
    model.check_size(*images.shape[-2:])
    inv = invert(model, images, args.prompt, method=args.method, steps=args.steps, guidance=args.guidance,
                 negative=args.negative, spacing=args.spacing, strength=args.strength,
                 decoder_inversion=decoder_inversion, **parse_options(args.opt))
    os.makedirs(args.output, exist_ok=True)
    path = inv.save(os.path.join(args.output, "inversion.safetensors"))
    start = time.perf_counter()
    z_hat = reconstruct(model, inv, steps=args.sample_steps, decode=False)
    recon = model.decode(z_hat)
    metrics = summary(images, recon, inv.z0, z_hat)
    # the best any inversion of E(x) can do, and (with --decoder-inversion) of the fitted latent
    ceilings = {"vae_ceiling_psnr": "roundtrip_psnr", "decoder_ceiling_psnr": "decoder_psnr"}
    metrics.update({k: fmean(inv.stats[v]) for k, v in ceilings.items() if v in inv.stats})
    if "decoder_psnr" not in inv.stats:
        metrics["vae_ceiling_psnr"] = summary(images, model.decode(inv.z0))["psnr"]
    metrics.update(inv.stats, method=inv.method, steps=inv.num_steps, reconstruct_seconds=time.perf_counter() - start)
    for k, path_in in enumerate(args.images):
        stem = os.path.splitext(os.path.basename(path_in))[0]
        save_image(recon[k], os.path.join(args.output, f"{stem}_reconstruction.png"))
        save_image(images[k], os.path.join(args.output, f"{stem}_input.png"))
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"{inv.method} {inv.num_steps} steps: psnr {metrics['psnr']:.2f} dB  ssim {metrics['ssim']:.4f}  "
          f"latent_mse {metrics['latent_mse']:.3e}  (vae ceiling {metrics['vae_ceiling_psnr']:.2f} dB"
          + (f", decoder-inverted ceiling {metrics['decoder_ceiling_psnr']:.2f} dB" if "decoder_ceiling_psnr" in metrics else "")
          + f")  time {metrics['seconds']:.2f} s  nfe {metrics['nfe']:.0f}  "
          f"alpha_T {metrics['alpha_T']:.3f}  -> {path}")
    return 0


def run_reconstruct(args) -> int:
    from . import Inversion, reconstruct
    from .images import save_image

    inv = Inversion.load(args.inversion)
    args.model = args.model or inv.model
    model = open_model(args)
    recon = reconstruct(model, inv, steps=args.steps)
    root, ext = os.path.splitext(args.output)
    for k in range(recon.shape[0]):
        save_image(recon[k], args.output if recon.shape[0] == 1 else f"{root}_{k}{ext or '.png'}")
    print(f"reconstructed {recon.shape[0]} image(s) with {inv.method} -> {args.output}")
    return 0


def run_methods(args) -> int:
    from .methods import available, get_method

    for name in available():
        spec = get_method(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items() if k != "keep_trajectory")
        print(f"{name:20s} {spec.cost:40s} {spec.summary}\n{'':20s} options: {opts or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inversa", description="Precise diffusion inversion for diffusers models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("invert", help="invert images, write the inversion, reconstruction and metrics")
    p.add_argument("images", nargs="+", help="image file(s); several invert together as a batch")
    add_model_args(p)
    add_invert_args(p)
    p.add_argument("--sample-steps", type=int, default=None, help="reconstruction steps (default: as inverted)")
    p.add_argument("--output", "-o", default="inversa-out", help="output folder")
    p.set_defaults(run=run_invert)

    p = sub.add_parser("reconstruct", help="regenerate the image(s) of a saved inversion")
    p.add_argument("inversion", help="inversion.safetensors (or its folder)")
    add_model_args(p)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: as inverted)")
    p.add_argument("--output", "-o", default="reconstruction.png")
    p.set_defaults(run=run_reconstruct)

    p = sub.add_parser("methods", help="list inversion methods, their cost and options")
    p.set_defaults(run=run_methods)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "inversa " + shlex.join(argv)  # recorded by commands that write provenance
    try:
        _quiet()
        return args.run(args)
    except InversaError as exc:
        print(f"inversa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inversa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
