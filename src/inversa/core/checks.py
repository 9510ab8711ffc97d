"""Cheap checks of user input, run before a model is loaded or an image inverted.

Each failure is one :class:`InversaError` line that names what is allowed, so a
mistake costs a second, not a finished inversion and then a traceback.
"""
from __future__ import annotations

import inspect
import math
import os
import stat
import tempfile
import typing

import torch

from .errors import InversaError

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SQLITE_HEADER = b"SQLite format 3\x00"
# what ``-o`` names for each command (commands not listed are not checked)
OUTPUT_KINDS = {"invert": "folder", "interpolate": "folder", "report": "folder", "train-tiny": "folder",
                "reconstruct": "image", "edit": "image", "bench": "store"}
CPU_MEGAPIXELS = 4.0  # default cap on CPU; INVERSA_MAX_MEGAPIXELS overrides (0: no cap)
MAX_STEPS = 1000  # sampling/inversion steps, every command (the stock schedules have 1000 levels)
MAX_SIZE = 4096  # --size, every command, also when upscaling
MAX_TRAIN_STEPS = 10 ** 7  # train-tiny's --steps / --vae-steps
MAX_COUNT = 100_000  # any other count (iterations, images, batch sizes, dataset sizes)
MAX_JSON_MB = 50  # dataset files (captions, PIE mapping)
MAX_JSON_DEPTH = 64
DEVICE_TYPES = ("cpu", "cuda", "mps")


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
        if integer and value > max(MAX_COUNT, default):  # iterations and sizes: a typo must not run for ever
            raise InversaError(f"{what} must be <= {max(MAX_COUNT, default)}; got {value!r}")
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
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (0 < value <= 1 if low_open else 0 <= value <= 1)  # NaN fails both comparisons
    if not ok:
        raise InversaError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}; got {value}")
    return float(value)


def count(value, name: str, low: int = 1, high: int = MAX_COUNT) -> int:
    """An integer in [low, high] (the upper bound stops a typo from running for ever)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InversaError(f"{name} must be an integer; got {value!r}")
    if value < low:
        raise InversaError(f"{name} must be at least {low}; got {value}")
    if value > high:
        raise InversaError(f"{name} must be at most {high}; got {value}")
    return value


def steps(value, name: str = "steps") -> int:
    """Inversion or sampling steps: the one bound every command and the Python API share."""
    return count(value, name, 1, MAX_STEPS)


def size(value, name: str = "size") -> int:
    """A square side in pixels (0: keep the image's own), bounded also when it would upscale."""
    return count(value, name, 0, MAX_SIZE)


def positive(value, name: str) -> float:
    """A finite number > 0 (minutes, budgets)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InversaError(f"{name} must be a finite number > 0; got {value}")
    return float(value)


def finite(value, name: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise InversaError(f"{name} must be a finite number >= {low:g}; got {value}")
    return float(value)


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
    except (RuntimeError, ValueError, TypeError):
        raise InversaError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type not in DEVICE_TYPES:  # meta holds no data; others are not wired up
        raise InversaError(f"device {name!r} cannot run inversa; expected cpu, cuda, cuda:N or mps")
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
    try:  # access() says yes to root everywhere; /sys, /proc and read-only mounts still refuse
        fd, probe = tempfile.mkstemp(prefix=".inversa-probe-", dir=here)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise InversaError(f"cannot write {path}: {here} refuses new files ({exc.strerror})") from None


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
    regular_file(path, "results store")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise InversaError(f"{path} is not an SQLite results store")


# input files ----------------------------------------------------------------------------------------------------------

KINDS = ((stat.S_ISFIFO, "a named pipe (fifo)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def regular_file(path: str, what: str = "file") -> os.stat_result:
    """``path`` is a regular file (symlinks followed), found by ``stat`` before anything opens it:
    opening a fifo blocks for ever and a device reads without end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InversaError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InversaError(f"cannot read {what} {path} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in KINDS if test(st.st_mode)), "not a regular file")
        raise InversaError(f"{what} {path} is {kind}, not a regular file")
    return st


def read_json(path: str, what: str, max_mb: float = MAX_JSON_MB, depth: int = MAX_JSON_DEPTH):
    """A JSON file read within bounds: regular, at most ``max_mb``, UTF-8, nested at most ``depth`` deep."""
    import json

    st = regular_file(path, what)
    if st.st_size > max_mb * 2 ** 20:
        raise InversaError(f"{what} {path} is {st.st_size / 2 ** 20:.0f} MB, over the {max_mb:g} MB cap")
    text = read_text(path, what)
    deepest = nested_depth(text)
    if deepest > depth:
        raise InversaError(f"{what} {path} nests {deepest} levels deep, over the {depth} allowed")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InversaError(f"{what} {path} is not valid JSON ({exc})") from None


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise InversaError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise InversaError(f"cannot read {what} {path} ({exc.strerror})") from None


def nested_depth(text: str) -> int:
    """How deep JSON brackets nest, outside strings (vectorised: no recursion to overflow, fast on 50 MB)."""
    import re

    import numpy as np

    code = np.frombuffer(re.sub(r'"(?:[^"\\]|\\.)*"', '""', text).encode("utf-8", "replace"), dtype=np.uint8)
    delta = (code == ord("[")).astype(np.int64) + (code == ord("{")) - (code == ord("]")) - (code == ord("}"))
    return int(np.cumsum(delta).max()) if delta.size else 0


def inside(root: str, path: str, what: str) -> str:
    """``path`` resolved (symlinks followed); refused unless it lies inside ``root`` (resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise InversaError(f"{what} {path} leads outside {root}; dataset paths must stay inside its folder")
    return real


# outputs against inputs -----------------------------------------------------------------------------------------------

def _identity(path: str):
    """(device, inode) of an existing path, symlinks followed (hard links and ``./x`` spellings match too)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refuse_overwrite(outputs, inputs) -> None:
    """No output path is one of the inputs (resolved, symlinks followed): a command never destroys what it reads."""
    ids = {}
    for path in inputs:
        if path and _identity(path) is not None:
            ids.setdefault(_identity(path), path)
            ids.setdefault(os.path.realpath(path), path)
    for out in outputs:
        hit = ids.get(_identity(out)) if _identity(out) is not None else None
        hit = hit or ids.get(os.path.realpath(out))
        if hit is not None:
            raise InversaError(f"output {out} is the input {hit}: refusing to overwrite it; choose another -o")


def _files_under(folder: str, limit: int = 100_000) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.join(root, n) for n in names]
        if len(out) > limit:
            break
    return out


def command_files(args) -> tuple[list[str], list[str]]:
    """(outputs, inputs) of a parsed command line: the files it will write and those it reads."""
    from .outputs import unique_stems

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
            from .tiny import default_model_path

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


# the command line -----------------------------------------------------------------------------------------------------

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
        from .cli import parse_options

        method_options(get("method"), parse_options(get("opt")))
    if get("results") is not None:
        store_file(get("results"), must_exist=True)
    kind = OUTPUT_KINDS.get(get("command"))
    if kind and get("output"):
        {"folder": output_folder, "image": output_image, "store": store_file}[kind](get("output"))
    refuse_overwrite(*command_files(args))
