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
import types
import typing

import torch

from inversa.core.errors import InversaError

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SQLITE_HEADER = b"SQLite format 3\x00"
CPU_MEGAPIXELS = 4.0  # default cap on CPU; INVERSA_MAX_MEGAPIXELS overrides (0: no cap)
MAX_STEPS = 1000  # sampling/inversion steps, every command (the stock schedules have 1000 levels)
MAX_SIZE = 4096  # --size, every command, also when upscaling
MAX_TRAIN_STEPS = 10 ** 7  # train-tiny's --steps / --vae-steps
MAX_COUNT = 100_000  # any other count (iterations, images, batch sizes, dataset sizes)
MAX_JSON_MB = 50  # dataset files (captions, PIE mapping)
MAX_JSON_DEPTH = 64
DEVICE_TYPES = ("cpu", "cuda", "mps")


# method options ---------------------------------------------------------------------------------------------------

def signature_options(what: str, fn, names, options: dict) -> dict:
    """``options`` checked against the keyword options ``names`` of ``fn``; returns them with ints widened where
    floats are expected.

    Each value is checked against its parameter's annotation (``int``, ``float``, ``bool``, ``str``,
    ``Literal[...]``, each optionally ``| None``): numbers are finite and at least :func:`lower_bound`.
    """
    params = {k: p for k, p in inspect.signature(fn, eval_str=True).parameters.items()
              if k in names and k != "keep_trajectory"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InversaError(f"method {what} has no option {', '.join(unknown)}; "
                           f"options: {', '.join(params) or 'none'}")
    return {k: _option(f"{what} option {k}", v, params[k]) for k, v in options.items()}


def option_kind(param: inspect.Parameter) -> tuple[object, bool]:
    """The type an option takes and whether it may be None, from its annotation (or its default's type)."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return (type(param.default) if param.default is not None else object), param.default is None
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else object), True
    return annotation, False


def _option(what: str, value, param: inspect.Parameter):
    kind, optional = option_kind(param)
    if value is None and optional:
        return None
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise InversaError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise InversaError(f"{what} must be True or False; got {value!r}")
        return value
    if kind in (int, float):
        integer = kind is int
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise InversaError(f"{what} must be {'an integer' if integer else 'a finite number'}; got {value!r}")
        low = lower_bound(kind, param.default)
        if value < low:
            raise InversaError(f"{what} must be >= {low}; got {value!r}")
        high = max(MAX_COUNT, param.default or 0)
        if integer and value > high:  # iterations and sizes: a typo must not run for ever
            raise InversaError(f"{what} must be <= {high}; got {value!r}")
        return value if integer else float(value)
    if kind is str and not isinstance(value, str):
        raise InversaError(f"{what} must be a string; got {value!r}")
    return value


def lower_bound(kind: type, default) -> int | float:
    """Smallest value a numeric option takes: 1 for an integer whose default is a count (>= 1, or None: a count
    the method chooses), else 0."""
    if kind is int:
        return 1 if default is None or (isinstance(default, int) and default >= 1) else 0
    return 0.0


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
    from inversa.core.samplers import coefficients

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


def writable(path: str) -> None:
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
    writable(path)


def store_file(path: str, must_exist: bool = False) -> None:
    """A results store: an SQLite file (or, for writing, a name that is free)."""
    if os.path.isdir(path):
        raise InversaError(f"results store {path} is a folder; give an .sqlite file")
    if not os.path.exists(path):
        if must_exist:
            raise InversaError(f"results store {path} does not exist")
        writable(os.path.dirname(path) or ".")
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




