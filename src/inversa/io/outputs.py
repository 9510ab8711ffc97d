"""Writing output files so that an interrupted command leaves whole files or none.

Every file goes to a hidden temporary name beside its target and is renamed over
it only when all the files of one item are written (:func:`staged`); a failure or
Ctrl-C before that removes the temporaries. A rename within a folder is atomic.
"""
from __future__ import annotations

import contextlib
import os


def temporary_name(path: str) -> str:
    """``dir/.name.PID.tmp.ext``: beside ``path``, hidden, with its extension (writers pick formats by it)."""
    folder, base = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(base)
    return os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")


@contextlib.contextmanager
def staged():
    """``with staged() as stage: write(stage(path))``: every staged file appears at the end, or none does."""
    pending: list[tuple[str, str]] = []

    def stage(path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = temporary_name(path)
        pending.append((tmp, path))
        return tmp

    try:
        yield stage
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise
    for tmp, path in pending:
        os.replace(tmp, path)


def write_text(path: str, text: str) -> str:
    """Write a text file atomically; returns ``path``."""
    with staged() as stage, open(stage(path), "w", encoding="utf-8") as f:
        f.write(text)
    return path


def unique_stems(paths: list[str]) -> list[str]:
    """File stems for outputs named after inputs, made distinct: ``x/a.png, y/a.png`` -> ``a, a-2``."""
    used: set[str] = set()
    out = []
    for path in paths:
        stem = base = os.path.splitext(os.path.basename(path))[0]
        k = 1
        while stem in used:
            k += 1
            stem = f"{base}-{k}"
        used.add(stem)
        out.append(stem)
    return out
