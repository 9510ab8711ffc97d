"""Training checkpoints as safetensors + JSON: resuming never unpickles (a pickle can run any code).

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts (model
and optimizer state dicts, counters). Tensors go to the safetensors body under
their path (``opt/state/3/exp_avg``); the rest is JSON in the file's metadata with
``{"__tensor__": path}`` in the tensors' places. Optimizer state is keyed by
integers, which JSON cannot keep, so such dicts are written ``{"__int_keys__": {...}}``.
"""
from __future__ import annotations

import glob
import json
import os

import torch

from inversa.core.errors import InversaError
from inversa.io.outputs import staged

KEY = "inversa.checkpoint"


def _flatten(value, path: str, tensors: dict):
    if torch.is_tensor(value):
        tensors[path] = value.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": path}
    if isinstance(value, dict):
        body = {str(k): _flatten(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {"__int_keys__": body} if value and all(isinstance(k, int) for k in value) else body
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _restore(value, tensors: dict):
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__int_keys__"}:
            return {int(k): _restore(v, tensors) for k, v in value["__int_keys__"].items()}
        return {k: _restore(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, tensors) for v in value]
    return value


def save(path: str, state: dict) -> None:
    """Write ``state`` to ``path`` (.safetensors) atomically."""
    from safetensors.torch import save_file

    tensors: dict = {}
    body = _flatten(state, "", tensors)
    with staged() as stage:
        save_file(tensors, stage(path), metadata={KEY: json.dumps(body)})


def load(path: str) -> dict:
    """Read a checkpoint written by :func:`save`."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            body = json.loads((f.metadata() or {})[KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one line
        raise InversaError(f"{path} is not a readable inversa checkpoint ({type(exc).__name__})") from None
    return _restore(body, tensors)


def refuse_pickles(folder: str) -> None:
    """Stop ``--resume`` on a folder holding old pickled checkpoints rather than silently starting over."""
    found = sorted(glob.glob(os.path.join(folder, "checkpoint-*.pt")))
    if found:
        raise InversaError(f"{found[0]} is a pickled checkpoint, which inversa no longer reads (unpickling can run "
                           "any code); delete it to train from scratch, or resume from a .safetensors checkpoint")
