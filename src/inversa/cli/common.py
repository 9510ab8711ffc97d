"""What the subcommands share: model and option arguments, opening the model, notes on stderr."""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time

from inversa.core.errors import InversaError


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


def invert_and_replay(args, model, batch, decoder_inversion):
    """``inversa invert``'s inversion of ``batch`` and its stock replay: (inversion, replayed latent, decoded
    replay, replay seconds); images and clips alike."""
    from inversa.inversion.api import invert, reconstruct

    inv = invert(model, batch, args.prompt, method=args.method, steps=args.steps, guidance=args.guidance,
                 negative=args.negative, spacing=args.spacing, strength=args.strength,
                 decoder_inversion=decoder_inversion, **parse_options(args.opt))
    start = time.perf_counter()
    z_hat = reconstruct(model, inv, steps=args.sample_steps, decode=False)
    return inv, z_hat, model.decode(z_hat), time.perf_counter() - start


def decoder_request(args) -> bool | dict:
    """``decoder_inversion`` for :func:`inversa.invert` from ``--decoder-inversion`` / ``--decoder-opt``."""
    if args.decoder_opt and not args.decoder_inversion:
        raise InversaError("--decoder-opt needs --decoder-inversion")
    from inversa.models.decoder import options

    return options(parse_options(args.decoder_opt) or True) if args.decoder_inversion else False


def default_model() -> str:
    from inversa.tiny import default_model_path

    return default_model_path()


def quiet() -> None:
    """No hub access, no progress bars, errors only from diffusers and transformers."""
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
    from inversa.models.diffusers.loader import load_model

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


_DEFERRED: list[str] | None = None  # inside main(): notes wait until the command succeeds


def defer_notes(on: bool = True) -> list[str]:
    """Start keeping notes back (``on``) or stop; returns the notes kept back so far."""
    global _DEFERRED
    kept, _DEFERRED = _DEFERRED or [], ([] if on else None)
    return kept


def print_notes(notes: list[str]) -> None:
    """Each distinct note once, as a ``note:`` line on stderr; inside :func:`main` after the command succeeded,
    so that a refused command prints its one error line and nothing else."""
    if _DEFERRED is not None:
        _DEFERRED.extend(notes)
        return
    for note in dict.fromkeys(notes):
        print(f"note: {note}", file=sys.stderr)
