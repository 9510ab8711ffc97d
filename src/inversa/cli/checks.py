"""Checks of a parsed command line before the command runs: every value, and what it reads against what it writes."""
from __future__ import annotations

import os

from inversa.core.checks import (IMAGE_OUTPUTS, MAX_TRAIN_STEPS, writable, count, device, fraction, guidance,
                                 output_folder, positive, refuse_overwrite, size, steps, store_file)
from inversa.core.errors import InversaError
from inversa.editing.options import method_options

# what ``-o`` names for each command (commands not listed are not checked)
OUTPUT_KINDS = {"invert": "folder", "interpolate": "folder", "report": "folder", "train-tiny": "folder",
                "reconstruct": "image", "edit": "image", "bench": "store"}


def output_image(path: str) -> None:
    if os.path.isdir(path):
        raise InversaError(f"output {path} is a folder; -o names an image file ({', '.join(IMAGE_OUTPUTS)})")
    from inversa.io.video import VIDEO_EXTS  # a video model's clip may go to a video file

    if os.path.splitext(path)[1].lower() not in IMAGE_OUTPUTS + VIDEO_EXTS:
        raise InversaError(f"output {path} must end in one of {', '.join(IMAGE_OUTPUTS + VIDEO_EXTS)}")
    writable(os.path.dirname(path) or ".")


def _files_under(folder: str, limit: int = 100_000) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.join(root, n) for n in names]
        if len(out) > limit:
            break
    return out


def command_files(args) -> tuple[list[str], list[str]]:
    """(outputs, inputs) of a parsed command line: the files it will write and those it reads."""
    from inversa.io.outputs import unique_stems

    get = lambda name: getattr(args, name, None)  # noqa: E731
    command, out = get("command"), get("output")
    inputs = [p for name in ("image", "image_a", "image_b", "mask", "results", "captions", "lpips_weights",
                             "lpips_squeeze_weights") if isinstance(get(name), str) for p in [get(name)]]
    inputs += list(get("images") or [])
    if isinstance(get("inversion"), str):
        inv = get("inversion")
        inputs.append(os.path.join(inv, "inversion.safetensors") if os.path.isdir(inv) else inv)
    data = get("data")
    if isinstance(data, str) and not data.startswith("builtin:"):
        folder = data[4:] if data.startswith("pie:") else data
        if os.path.isdir(folder):  # the store's own files are appended to, not inputs (a store may sit in the folder)
            own = {os.path.realpath(p) for p in (out, f"{out}-wal", f"{out}-shm")} if out else set()
            assets = os.path.realpath(os.path.splitext(out)[0] + "_images") if out else None
            inputs += [p for p in _files_under(folder) if os.path.realpath(p) not in own
                       and not (assets and os.path.realpath(p).startswith(assets + os.sep))]
    if command == "train-tiny":
        base = get("base")
        if base is None and get("recipe") not in (None, "base"):
            from inversa.tiny import default_model_path

            base = default_model_path()
        inputs += [base] if base else []
        return ([out] if out else []), inputs
    if not out:
        return [], inputs
    if command == "invert":
        outputs = [os.path.join(out, n) for n in ("inversion.safetensors", "metrics.json")]
        outputs += [os.path.join(out, f"{stem}_{kind}.png") for stem in unique_stems(get("images") or [])
                    for kind in ("reconstruction", "input")]
    elif command == "edit":
        root, ext = os.path.splitext(out)
        outputs = [out, f"{root}_source{ext}"]
    elif command == "interpolate":
        outputs = [os.path.join(out, f"frame_{k:02d}_alpha_{a:.3f}.png") for k, a in enumerate(get("alpha") or [])]
        outputs += [os.path.join(out, "strip.png"), out]
    elif command == "report":
        outputs = [os.path.join(out, n) for n in ("report.md", "index.html", "psnr_vs_time.png", "residuals.png")]
        outputs += [out, os.path.join(out, "gallery")]
    elif command == "bench":
        root = os.path.splitext(out)[0]
        outputs = [out, out + "-wal", out + "-shm", root + "_images"]
    else:
        outputs = [out]
    return outputs, inputs


def arguments(args) -> None:
    """Check what a parsed command line gives before the command runs (only the attributes it has)."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    training = get("command") == "train-tiny"
    device(get("device"))
    for name in ("steps", "sample_steps"):
        if get(name) is not None:
            (count(get(name), "--steps", 1, MAX_TRAIN_STEPS) if training and name == "steps"
             else steps(get(name), "--" + name.replace("_", "-")))
    if get("vae_steps") is not None:
        count(get("vae_steps"), "--vae-steps", 1, MAX_TRAIN_STEPS)
    for name in ("max_images", "limit", "batch_size", "vae_batch_size", "dataset_size", "checkpoint_every",
                 "threads"):
        if get(name) is not None:
            count(get(name), "--" + name.replace("_", "-"))
    if get("seed") is not None:
        count(get("seed"), "--seed", 0, 2 ** 32 - 1)
    for name in ("minutes", "vae_minutes"):
        if get(name) is not None:
            positive(get(name), "--" + name.replace("_", "-"))
    for name in ("guidance", "inversion_guidance", "embedded_guidance"):
        if get(name) is not None:
            guidance(get(name), "--" + name.replace("_", "-"))
    if get("size") is not None:
        size(get("size"), "--size")
    if get("strength") is not None:
        fraction(get("strength"), "--strength", low_open=True)
    for name in ("cross_replace", "self_replace", "blend_threshold"):
        if get(name) is not None:
            fraction(get(name), "--" + name.replace("_", "-"))
    for alpha in get("alpha") or []:
        fraction(alpha, "--alpha")
    if get("alpha") is not None:
        count(len(get("alpha")), "the number of --alpha values", 1, 1000)
    if isinstance(get("methods"), str) and not [m for m in get("methods").split(",") if m.strip()]:
        raise InversaError(f"--methods {get('methods')!r} names no method; give comma-separated method names")
    if training and get("base") is not None and not os.path.isdir(get("base")):
        raise InversaError(f"--base {get('base')} is not a model folder (a diffusers folder saved on this machine)")
    if get("method") and hasattr(args, "opt"):
        from inversa.cli.common import parse_options

        method_options(get("method"), parse_options(get("opt")))
    if get("results") is not None:
        store_file(get("results"), must_exist=True)
    kind = OUTPUT_KINDS.get(get("command"))
    if kind and get("output"):
        {"folder": output_folder, "image": output_image, "store": store_file}[kind](get("output"))
    refuse_overwrite(*command_files(args))
