"""Cheap checks of user input, run before a model is loaded or an image inverted.

Each failure is one :class:`InversaError` line that names what is allowed, so a
mistake costs a second, not a finished inversion and then a traceback.
"""
from __future__ import annotations

import inspect
import math
import os
import typing

import torch

from .errors import InversaError

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SQLITE_HEADER = b"SQLite format 3\x00"
# what ``-o`` names for each command (commands not listed are not checked)
OUTPUT_KINDS = {"invert": "folder", "interpolate": "folder", "report": "folder", "train-tiny": "folder",
                "reconstruct": "image", "edit": "image", "bench": "store"}
CPU_MEGAPIXELS = 4.0  # default cap on CPU; INVERSA_MAX_MEGAPIXELS overrides (0: no cap)


# method options ---------------------------------------------------------------------------------------------------

def method_options(method: str, options: dict) -> dict:
    """``options`` checked against ``method``'s signature; returns them with ints widened where floats are expected.

    ``method`` is an inversion method or an editing recipe (:mod:`inversa.recipes`).
    Names must be keyword options of the method; values take the default's type;
    numbers are finite and not below ``min(default, 0)`` (floats) or ``min(default, 1)``
    (integers: a positive default is a count, a negative one a sentinel); a
    ``Literal[...]`` annotation lists the allowed strings.
    """
    from .methods import get_method
    from .recipes import RECIPES

    if method in RECIPES:
        fn, names = RECIPES[method].fn, RECIPES[method].options()
    else:
        spec = get_method(method)
        fn, names = spec.invert, spec.options()
    params = {k: p for k, p in inspect.signature(fn, eval_str=True).parameters.items()
              if k in names and k != "keep_trajectory"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InversaError(f"method {method} has no option {', '.join(unknown)}; "
                           f"options: {', '.join(params) or 'none'}")
    return {k: _option(f"{method} option {k}", v, params[k].default, params[k].annotation) for k, v in options.items()}


def _option(what: str, value, default, annotation):
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise InversaError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InversaError(f"{what} must be True or False; got {value!r}")
        return value
    if isinstance(default, (int, float)):
        integer = isinstance(default, int)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise InversaError(f"{what} must be {'an integer' if integer else 'a finite number'}; got {value!r}")
        low = lower_bound(default)
        if value < low:
            raise InversaError(f"{what} must be >= {low}; got {value!r}")
        return value if integer else float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise InversaError(f"{what} must be a string; got {value!r}")
    return value


def lower_bound(default: int | float) -> int | float:
    """Smallest value a numeric option takes: a positive integer default is a count (>= 1), a negative one a sentinel."""
    return min(default, 1) if isinstance(default, int) else min(default, 0.0)


# numbers ------------------------------------------------------------------------------------------------------------

def guidance(w, name: str = "guidance") -> float:
    """A classifier-free guidance scale: finite and >= 0."""
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise InversaError(f"{name} must be a finite number >= 0 (the guidance scale w: 0 unconditional, 1 the prompt "
                           f"alone, > 1 pushed towards the prompt); got {w}")
    return float(w)


def fraction(value, name: str, low_open: bool = False) -> float:
    """A number in [0, 1] (or (0, 1] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and (0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise InversaError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}; got {value}")
    return float(value)


def count(value, name: str, low: int = 1) -> int:
    if value < low:
        raise InversaError(f"{name} must be at least {low}; got {value}")
    return value


def invertible(prediction: str, schedule, limit: float = 1e-3) -> None:
    """Refuse a schedule with a step whose result barely depends on its input: no noise maps back through it.

    That happens when the last step starts at a zero-terminal-SNR level (alpha ~ 0),
    e.g. one step with trailing spacing: the step's output is the model's guess of
    the image whatever ``x_T`` is, so ``x_T = (x_prev - B out) / A`` divides by ~0.
    """
    from .samplers import coefficients

    for i in range(len(schedule)):
        a, b = coefficients(prediction, *schedule.levels(i))
        if abs(a) < limit:
            t, alpha = float(schedule.timesteps[i]), schedule.levels(i)[0]
            raise InversaError(
                f"{len(schedule)} step(s) cannot be inverted on this schedule: step {i + 1} starts at t={t:g} "
                f"(alpha {alpha:.1e}: next to no trace of the image) and its result depends on its input only by "
                f"a factor {a:.1e}, so no noise maps back to the image; use more steps or another --spacing")


def megapixels(height: int, width: int, device) -> None:
    """Stop before a huge image ties up a CPU for minutes (INVERSA_MAX_MEGAPIXELS overrides, 0 = no cap)."""
    if torch.device(device).type != "cpu":
        return
    cap = os.environ.get("INVERSA_MAX_MEGAPIXELS", str(CPU_MEGAPIXELS))
    try:
        cap = float(cap)
    except ValueError:
        raise InversaError(f"INVERSA_MAX_MEGAPIXELS must be a number; got {cap!r}") from None
    mp = height * width / 1e6
    if cap > 0 and mp > cap:
        raise InversaError(f"image is {width}x{height} ({mp:.1f} megapixels), over the {cap:g} megapixel cap on "
                           "CPU: resize it (--size N) or set INVERSA_MAX_MEGAPIXELS=0 to go ahead")


# devices and paths -------------------------------------------------------------------------------------------------

def device(name: str | None) -> None:
    """A device torch knows and this machine has."""
    if not name:
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InversaError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no GPU visible"
            raise InversaError(f"device {name}: CUDA is not available here ({build}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InversaError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InversaError(f"device {name}: MPS is not available here; use --device cpu")


def _writable(path: str) -> None:
    """The nearest existing folder above ``path`` exists as a folder and may be written."""
    here = os.path.abspath(path)
    while not os.path.exists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise InversaError(f"cannot create {path}: {here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise InversaError(f"cannot write {path}: no permission to write in {here}")


def output_folder(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise InversaError(f"output {path} is a file; -o names a folder here")
    _writable(path)


def output_image(path: str) -> None:
    if os.path.isdir(path):
        raise InversaError(f"output {path} is a folder; -o names an image file ({', '.join(IMAGE_OUTPUTS)})")
    from .video import VIDEO_EXTS  # a video model's clip may go to a video file

    if os.path.splitext(path)[1].lower() not in IMAGE_OUTPUTS + VIDEO_EXTS:
        raise InversaError(f"output {path} must end in one of {', '.join(IMAGE_OUTPUTS + VIDEO_EXTS)}")
    _writable(os.path.dirname(path) or ".")


def store_file(path: str, must_exist: bool = False) -> None:
    """A results store: an SQLite file (or, for writing, a name that is free)."""
    if os.path.isdir(path):
        raise InversaError(f"results store {path} is a folder; give an .sqlite file")
    if not os.path.exists(path):
        if must_exist:
            raise InversaError(f"results store {path} does not exist")
        _writable(os.path.dirname(path) or ".")
        return
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise InversaError(f"{path} is not an SQLite results store")


# the command line -----------------------------------------------------------------------------------------------------

def arguments(args) -> None:
    """Check what a parsed command line gives before the command runs (only the attributes it has)."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    device(get("device"))
    for name in ("steps", "sample_steps", "max_images", "limit"):
        if get(name) is not None:
            count(get(name), "--" + name.replace("_", "-"))
    for name in ("guidance", "inversion_guidance"):
        if get(name) is not None:
            guidance(get(name), "--" + name.replace("_", "-"))
    if get("size") is not None:
        count(get("size"), "--size", low=0)
    if get("strength") is not None:
        fraction(get("strength"), "--strength", low_open=True)
    for name in ("cross_replace", "self_replace"):
        if get(name) is not None:
            fraction(get(name), "--" + name.replace("_", "-"))
    for alpha in get("alpha") or []:
        fraction(alpha, "--alpha")
    if get("method") and hasattr(args, "opt"):
        from .cli import parse_options

        method_options(get("method"), parse_options(get("opt")))
    if get("results") is not None:
        store_file(get("results"), must_exist=True)
    kind = OUTPUT_KINDS.get(get("command"))
    if kind and get("output"):
        {"folder": output_folder, "image": output_image, "store": store_file}[kind](get("output"))
