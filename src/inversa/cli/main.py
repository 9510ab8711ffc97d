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
from .validate import IMAGE_OUTPUTS


# Modules that add a subcommand with ``add_command(subparsers)``; each sets ``run=fn(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = ("inversa.bench.cli", "inversa.tiny.train", "inversa.edit", "inversa.interpolate",
                                    "inversa.serve")


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
    p.add_argument("--model", "-m", default=None, help="diffusers folder, hub id or shipped model: embedded "
                   "(default), embedded-lcm (1-4 steps), embedded-flow (SD3)")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 | float64")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--embedded-guidance", type=float, default=None,
                   help="guidance input of distilled models (FLUX.1-dev default 3.5, LCM 8.5)")


def open_model(args):
    from .model import load_model

    return load_model(args.model or default_model(), dtype=args.dtype, device=args.device,
                      embedded_guidance=args.embedded_guidance)


def add_invert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="preciseinv", help="inversion method (see `inversa methods`; ddim for speed)")
    p.add_argument("--steps", type=int, default=10, help="inversion steps")
    p.add_argument("--prompt", default="", help="source prompt (default: empty)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale during inversion")
    p.add_argument("--negative", default="", help="unconditional / negative prompt")
    p.add_argument("--spacing", default=None, help="timestep spacing: leading | trailing | linspace")
    p.add_argument("--strength", type=float, default=1.0, help="partial inversion: fraction of the steps to invert")
    p.add_argument("--size", type=int, default=None, help="centre-crop and resize to SIZE (default: model's size; 0 keeps)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="method option, repeatable")
    add_decoder_args(p)
    add_video_args(p)


def add_video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=None, help="video: keep the first N frames of each clip")


def add_decoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder-inversion", action="store_true",
                   help="first fit a latent whose decoding matches the image (lifts the VAE ceiling)")
    p.add_argument("--decoder-opt", action="append", metavar="NAME=VALUE",
                   help="decoder inversion option (iters, reg, tol, history_size, checkpointing), repeatable")


def run_invert(args) -> int:
    from statistics import fmean

    import torch

    from . import invert, reconstruct
    from .api import image_size
    from .images import load_image, save_image
    from .metrics import summary
    from .outputs import staged, unique_stems
    from .prompts import prompt_notes

    decoder_inversion = decoder_request(args)  # checked before the model loads
    model = open_model(args)
    from . import video_cli

    if getattr(model, "video", False):
        return video_cli.run_invert(args, model, decoder_inversion)
    video_cli.refuse_clips(model, args.images)
    notes: list[str] = []
    images = torch.cat([load_image(path, image_size(model, args.size), notes) for path in args.images])
    notes += prompt_notes(model, [args.prompt, args.negative])
    model.check_size(*images.shape[-2:])  # a refused size is the one line, without the notes before it
    print_notes(notes)
    inv = invert(model, images, args.prompt, method=args.method, steps=args.steps, guidance=args.guidance,
                 negative=args.negative, spacing=args.spacing, strength=args.strength,
                 decoder_inversion=decoder_inversion, **parse_options(args.opt))
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
    path = os.path.join(args.output, "inversion.safetensors")
    with staged() as stage:  # all outputs appear together: an interrupted run leaves none
        inv.save(stage(path))
        for k, stem in enumerate(unique_stems(args.images)):
            save_image(recon[k], stage(os.path.join(args.output, f"{stem}_reconstruction.png")))
            save_image(images[k], stage(os.path.join(args.output, f"{stem}_input.png")))
        with open(stage(os.path.join(args.output, "metrics.json")), "w") as f:
            json.dump(metrics, f, indent=2)
    print(f"{inv.method} {inv.num_steps} steps: psnr {metrics['psnr']:.2f} dB  ssim {metrics['ssim']:.4f}  "
          f"latent_mse {metrics['latent_mse']:.3e}  (vae ceiling {metrics['vae_ceiling_psnr']:.2f} dB"
          + (f", decoder-inverted ceiling {metrics['decoder_ceiling_psnr']:.2f} dB" if "decoder_ceiling_psnr" in metrics else "")
          + f")  time {metrics['seconds']:.2f} s  nfe {metrics['nfe']:.0f}  "
          f"alpha_T {metrics['alpha_T']:.3f}  -> {path}")
    return 0


_DEFERRED: list[str] | None = None  # inside main(): notes wait until the command succeeds


def print_notes(notes: list[str]) -> None:
    """Each distinct note once, as a ``note:`` line on stderr; inside :func:`main` after the command succeeded,
    so that a refused command prints its one error line and nothing else."""
    if _DEFERRED is not None:
        _DEFERRED.extend(notes)
        return
    for note in dict.fromkeys(notes):
        print(f"note: {note}", file=sys.stderr)


def reconstruction_model(given: str | None, recorded: str) -> str:
    """The model to reconstruct with: ``--model``, or the embedded one when the inversion names it.

    Any other model path read from an inversion file is not opened unasked: a file
    from elsewhere must not choose what code and weights get loaded.
    """
    if given:
        return given
    if os.path.normpath(recorded).endswith(os.path.join("inversa", "tiny", "model")):
        return default_model()
    raise InversaError(f"this inversion was made with model {recorded!r}; name the model to reconstruct with "
                       f"(--model {shlex.quote(recorded)}): a model path read from a file is not opened unasked")


def run_reconstruct(args) -> int:
    from . import Inversion, reconstruct
    from .images import save_image
    from .validate import refuse_overwrite

    inv = Inversion.load(args.inversion)
    args.model = reconstruction_model(args.model, inv.model)
    model = open_model(args)
    if model.name != inv.model:
        print_notes([f"inverted with model {inv.model}, reconstructing with {model.name}"])
    recon = reconstruct(model, inv, steps=args.steps)
    if recon.ndim == 5:  # clips
        from .video_cli import write_reconstruction

        print(f"reconstructed {recon.shape[0]} clip(s) of {recon.shape[2]} frames with {inv.method} -> "
              f"{write_reconstruction(model, recon, args.output)}")
        return 0
    root, ext = os.path.splitext(args.output)
    if ext.lower() not in IMAGE_OUTPUTS:
        raise InversaError(f"output {args.output}: model {model.name} makes images; name an image file")
    names = [args.output] if len(inv) == 1 else [f"{root}_{k}{ext}" for k in range(len(inv))]
    refuse_overwrite(names, [args.inversion, os.path.join(args.inversion, "inversion.safetensors")])
    for k in range(recon.shape[0]):
        save_image(recon[k], names[k])
    print(f"reconstructed {recon.shape[0]} image(s) with {inv.method} -> {args.output}")
    return 0


def run_methods(args) -> int:
    from .methods import available, get_method

    from .recipes import RECIPES

    def show(name, spec):
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items() if k != "keep_trajectory")
        print(f"{name:20s} {spec.cost:40s} {spec.summary}\n{'':20s} options: {opts or '-'}")

    for name in available():
        show(name, get_method(name))
    print("\nediting recipes (inversa edit --method NAME; they edit the latent directly, nothing to invert or save):")
    for name, recipe in RECIPES.items():
        show(name, recipe)
    return 0


class Parser(argparse.ArgumentParser):
    """Usage errors in the same one-line form as every other error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"inversa: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="inversa", description="Precise diffusion inversion for diffusers models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("invert", help="invert images, write the inversion, reconstruction and metrics")
    p.add_argument("images", nargs="+", help="image file(s), or video clips / folders of frames for a video model; "
                   "several invert together as a batch")
    add_model_args(p)
    add_invert_args(p)
    p.add_argument("--sample-steps", type=int, default=None, help="reconstruction steps (default: as inverted)")
    p.add_argument("--output", "-o", default="inversa-out", help="output folder")
    p.add_argument("--video-format", default="mp4", choices=("mp4", "png"),
                   help="video: clips as mp4 (default) or folders of png frames")
    p.set_defaults(run=run_invert)

    p = sub.add_parser("reconstruct", help="regenerate the image(s) of a saved inversion")
    p.add_argument("inversion", help="inversion.safetensors (or its folder)")
    add_model_args(p)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: as inverted)")
    p.add_argument("--output", "-o", default="reconstruction.png",
                   help="image file; a clip goes to a video file (.mp4) or a folder of frames (x.png -> x/)")
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
    global _DEFERRED
    _DEFERRED = []
    try:
        from .validate import arguments

        arguments(args)
        _quiet()
        code = args.run(args)
        notes, _DEFERRED = _DEFERRED, None
        print_notes(notes)
        sys.stdout.flush()  # inside the try: a closed pipe raises here, not at interpreter exit
        return code
    except InversaError as exc:
        print(f"inversa: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inversa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # the environment refused (a full disk, a read-only mount): one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"inversa: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    finally:
        _DEFERRED = None


if __name__ == "__main__":
    sys.exit(main())
