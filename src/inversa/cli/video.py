"""The video side of ``inversa invert | reconstruct | edit``: clips in, clips and per-frame metrics out.

The commands hand over here when the model is a video family (Wan, CogVideoX); a clip is a
video file or a folder of frames (:mod:`inversa.io.video`), a still image a one-frame clip.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from inversa.core.errors import InversaError
from inversa.io.video import clip_output, is_clip, load_clip, save_clip


def refuse_clips(model, paths: list[str]) -> None:
    """A clip given to an image model: say which models take clips (one line)."""
    clips = [p for p in paths if is_clip(p) and (not os.path.isdir(p) or _has_frames(p))]
    if clips and not getattr(model, "video", False):
        raise InversaError(f"{clips[0]} is a video; model {model.name} is an image model ({model.family}): "
                           "invert clips with a video model (Wan, CogVideoX)")


def _has_frames(folder: str) -> bool:
    """A folder holding images is a clip of frames; any other folder is the image reader's one-line refusal."""
    return any(name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"))
               for name in os.listdir(folder))


def load_clips(model, paths: list[str], size: int | None, frames: int | None, notes: list) -> tuple[torch.Tensor, float]:
    """The batch (B, 3, F, H, W) of ``paths`` (clips or still images) and the first clip's fps."""
    from inversa.io.images import load_image

    clips, fps = [], None
    for path in paths:
        if is_clip(path):
            clip, rate = load_clip(path, size, frames, notes)
        else:
            clip, rate = load_image(path, size, notes)[:, :, None], None
        clips.append(clip)
        fps = fps or rate
    if len({tuple(c.shape[2:]) for c in clips}) > 1:
        raise InversaError("clips in one batch must share frame count and size: " +
                           ", ".join(f"{p} {c.shape[2]}x{c.shape[4]}x{c.shape[3]}" for p, c in zip(paths, clips)))
    model.as_clip(clips[0])  # frame rule and size, before any network runs
    return torch.cat(clips), fps or model.fps


def run_invert(args, model, decoder_inversion) -> int:
    from statistics import fmean

    from inversa.cli.common import invert_and_replay, print_notes
    from inversa.core.video_metrics import clip_summary
    from inversa.io.outputs import staged, unique_stems
    from inversa.io.prompts import prompt_notes
    from inversa.models.model import image_size

    notes: list[str] = []
    clips, fps = load_clips(model, args.images, image_size(model, args.size), args.frames, notes)
    print_notes(notes + prompt_notes(model, [args.prompt, args.negative]))
    inv, z_hat, recon, seconds = invert_and_replay(args, model, clips, decoder_inversion)
    metrics = clip_summary(clips, recon, inv.z0, z_hat)
    if "decoder_psnr" in inv.stats:
        metrics["decoder_ceiling_psnr"] = fmean(inv.stats["decoder_psnr"])
    metrics["vae_ceiling_psnr"] = clip_summary(clips, model.decode(inv.z0))["psnr"]
    metrics.update(inv.stats, method=inv.method, steps=inv.num_steps, fps=fps, reconstruct_seconds=seconds)
    path = os.path.join(args.output, "inversion.safetensors")
    with staged() as stage:  # the inversion, metrics and clips appear together
        inv.save(stage(path))
        with open(stage(os.path.join(args.output, "metrics.json")), "w") as f:
            json.dump(metrics, f, indent=2)
    ext = ".mp4" if args.video_format == "mp4" else ""  # else a folder of frames
    for k, stem in enumerate(unique_stems([p.rstrip("/") for p in args.images])):
        save_clip(recon[k], os.path.join(args.output, f"{stem}_reconstruction{ext}"), fps)
        save_clip(clips[k], os.path.join(args.output, f"{stem}_input{ext}"), fps)
    print(f"{inv.method} {inv.num_steps} steps, {metrics['frames']} frames: psnr {metrics['psnr']:.2f} dB  "
          f"ssim {metrics['ssim']:.4f}  temporal error {metrics['temporal_error']:.4f}  latent_mse "
          f"{metrics['latent_mse']:.3e}  (vae ceiling {metrics['vae_ceiling_psnr']:.2f} dB)  time "
          f"{metrics['seconds']:.2f} s  nfe {metrics['nfe']:.0f}  -> {path}")
    return 0


def write_reconstruction(model, recon: torch.Tensor, output: str) -> str:
    """Clips of ``reconstruct`` to ``output`` (video file by extension, else frames; ``x.png`` -> folder ``x``)."""
    target = clip_output(output)
    root, ext = os.path.splitext(target)
    fps = model.fps
    for k in range(recon.shape[0]):
        save_clip(recon[k], target if recon.shape[0] == 1 else f"{root}_{k}{ext}", fps)
    return target


def run_edit(args, model, decoder_inversion) -> int:
    from inversa.cli.common import parse_options, print_notes
    from inversa.core.metrics import psnr
    from inversa.core.video_metrics import frames_of
    from inversa.editing.edit import edit
    from inversa.io.prompts import prompt_notes
    from inversa.models.model import image_size

    if args.mask is not None or args.blend is not None:
        raise InversaError("--mask and --blend edit regions of images; a video edit has neither yet")
    notes: list[str] = []
    clip, fps = load_clips(model, [args.image], image_size(model, args.size), args.frames, notes)
    print_notes(notes + prompt_notes(model, [args.source_prompt, args.target_prompt, args.negative or ""]))
    result = edit(model, clip, args.source_prompt, args.target_prompt, method=args.method, steps=args.steps,
                  guidance=args.guidance, inversion_guidance=args.inversion_guidance, negative=args.negative,
                  cross_replace=0.0, self_replace=0.0, spacing=args.spacing, full=True,
                  decoder_inversion=decoder_inversion, **parse_options(args.opt))
    if args.cross_replace or args.self_replace:
        print("note: video transformers take no attention injection yet; edited from the shared inversion alone",
              file=sys.stderr)
    target = clip_output(args.output)
    root, ext = os.path.splitext(target)
    save_clip(result.images[0], target, fps)
    save_clip(result.source[0], f"{root}_source{ext}", fps)
    source_psnr = float(psnr(frames_of(clip), frames_of(result.source)).mean())
    print(f"{args.method}: '{args.source_prompt}' -> '{args.target_prompt}'  guidance {args.guidance}  "
          f"source-branch psnr {source_psnr:.2f} dB  -> {target}")
    return 0
