"""``inversa invert | reconstruct | methods``."""
from __future__ import annotations

import json
import os
import shlex

from inversa.cli import common
from inversa.cli.common import add_invert_args, add_model_args, decoder_request, default_model, print_notes
from inversa.core.checks import IMAGE_OUTPUTS
from inversa.core.errors import InversaError


def _write_invert(args, inv, images, recon, metrics: dict) -> str:
    """The inversion, each image and its reconstruction, and the metrics in ``--output``; returns the inversion's path."""
    from inversa.io.images import save_image
    from inversa.io.outputs import staged, unique_stems

    path = os.path.join(args.output, "inversion.safetensors")
    with staged() as stage:  # all outputs appear together: an interrupted run leaves none
        inv.save(stage(path))
        for k, stem in enumerate(unique_stems(args.images)):
            save_image(recon[k], stage(os.path.join(args.output, f"{stem}_reconstruction.png")))
            save_image(images[k], stage(os.path.join(args.output, f"{stem}_input.png")))
        with open(stage(os.path.join(args.output, "metrics.json")), "w") as f:
            json.dump(metrics, f, indent=2)
    return path


def run_invert(args) -> int:
    from statistics import fmean

    import torch

    from inversa.core.metrics import summary
    from inversa.io.images import load_image
    from inversa.io.prompts import prompt_notes
    from inversa.models.model import image_size

    decoder_inversion = decoder_request(args)  # checked before the model loads
    model = common.open_model(args)
    from inversa.cli import video as video_cli

    if getattr(model, "video", False):
        return video_cli.run_invert(args, model, decoder_inversion)
    video_cli.refuse_clips(model, args.images)
    notes: list[str] = []
    images = torch.cat([load_image(path, image_size(model, args.size), notes) for path in args.images])
    notes += prompt_notes(model, [args.prompt, args.negative])
    model.check_size(*images.shape[-2:])  # a refused size is the one line, without the notes before it
    print_notes(notes)
    inv, z_hat, recon, seconds = common.invert_and_replay(args, model, images, decoder_inversion)
    metrics = summary(images, recon, inv.z0, z_hat)
    # the best any inversion of E(x) can do, and (with --decoder-inversion) of the fitted latent
    ceilings = {"vae_ceiling_psnr": "roundtrip_psnr", "decoder_ceiling_psnr": "decoder_psnr"}
    metrics.update({k: fmean(inv.stats[v]) for k, v in ceilings.items() if v in inv.stats})
    if "decoder_psnr" not in inv.stats:
        metrics["vae_ceiling_psnr"] = summary(images, model.decode(inv.z0))["psnr"]
    metrics.update(inv.stats, method=inv.method, steps=inv.num_steps, reconstruct_seconds=seconds)
    path = _write_invert(args, inv, images, recon, metrics)
    print(f"{inv.method} {inv.num_steps} steps: psnr {metrics['psnr']:.2f} dB  ssim {metrics['ssim']:.4f}  "
          f"latent_mse {metrics['latent_mse']:.3e}  (vae ceiling {metrics['vae_ceiling_psnr']:.2f} dB"
          + (f", decoder-inverted ceiling {metrics['decoder_ceiling_psnr']:.2f} dB" if "decoder_ceiling_psnr" in metrics else "")
          + f")  time {metrics['seconds']:.2f} s  nfe {metrics['nfe']:.0f}  "
          f"alpha_T {metrics['alpha_T']:.3f}  -> {path}")
    return 0


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
    from inversa.core.checks import refuse_overwrite
    from inversa.inversion.api import reconstruct
    from inversa.io.images import save_image
    from inversa.io.result import Inversion

    inv = Inversion.load(args.inversion)
    args.model = reconstruction_model(args.model, inv.model)
    model = common.open_model(args)
    if model.name != inv.model:
        print_notes([f"inverted with model {inv.model}, reconstructing with {model.name}"])
    recon = reconstruct(model, inv, steps=args.steps)
    if recon.ndim == 5:  # clips
        from inversa.cli.video import write_reconstruction

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
    from inversa.methods import available, get_method

    from inversa.editing.recipes import RECIPES

    def show(name, spec):
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items() if k != "keep_trajectory")
        print(f"{name:20s} {spec.cost:40s} {spec.summary}\n{'':20s} options: {opts or '-'}")

    for name in available():
        show(name, get_method(name))
    print("\nediting recipes (inversa edit --method NAME; they edit the latent directly, nothing to invert or save):")
    for name, recipe in RECIPES.items():
        show(name, recipe)
    return 0


def add_command(sub) -> None:
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
