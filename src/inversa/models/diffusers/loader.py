"""The explicit loader: which family adapts a pipeline (:func:`family_of`), and :func:`load_model`.

To add a family, subclass :class:`~inversa.models.diffusers.base.DiffusersModel` (or a relative)
in its own module and list it in :data:`FAMILIES` before any family it specialises.
:func:`from_pipeline` builds the adapter of a pipeline already in memory; this module registers
:func:`family_of` with :class:`DiffusersModel` so that ``DiffusersModel(pipe)`` does the same.
"""
from __future__ import annotations

import json
import os

import torch

from inversa.core.errors import InversaError
from inversa.models.diffusers.base import SUPPORTED, DiffusersModel
from inversa.models.diffusers.chroma import ChromaModel
from inversa.models.diffusers.cogvideox import CogVideoXModel
from inversa.models.diffusers.flux import FluxModel
from inversa.models.diffusers.flux2 import Flux2Model
from inversa.models.diffusers.hidream import HiDreamModel
from inversa.models.diffusers.hunyuandit import HunyuanDiTModel
from inversa.models.diffusers.kontext import KontextModel
from inversa.models.diffusers.lcm import LCMModel
from inversa.models.diffusers.lumina2 import Lumina2Model
from inversa.models.diffusers.ltx import LTXModel
from inversa.models.diffusers.pixart import PixArtModel
from inversa.models.diffusers.qwenimage import QwenImageModel
from inversa.models.diffusers.sana import SanaModel
from inversa.models.diffusers.sd import SDModel
from inversa.models.diffusers.sd3 import SD3Model
from inversa.models.diffusers.sdxl import SDXLModel
from inversa.models.diffusers.wan import WanModel
from inversa.models.diffusers.zimage import ZImageModel
from inversa.models.model import Model

FAMILIES = (WanModel, CogVideoXModel, LTXModel, Flux2Model, QwenImageModel, ChromaModel, KontextModel, Lumina2Model, ZImageModel, FluxModel, SanaModel,
            PixArtModel, HunyuanDiTModel, HiDreamModel, SD3Model, SDXLModel, LCMModel, SDModel)  # most specific first
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def family_of(pipe) -> type[DiffusersModel]:
    """The adapter class for ``pipe``, or a one-line error naming what is supported."""
    if hasattr(pipe, "scheduler") and (getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)) is not None:
        for cls in FAMILIES:
            if cls.accepts(pipe):
                return cls
    raise InversaError(f"unsupported pipeline {type(pipe).__name__}; supported: {SUPPORTED}")


DiffusersModel.family_of = staticmethod(family_of)  # DiffusersModel(pipe) -> the family's adapter


def from_pipeline(pipe, name: str = "", embedded_guidance: float | None = None) -> DiffusersModel:
    """The adapter of ``pipe``'s family (a one-line error for an unsupported pipeline)."""
    return family_of(pipe)(pipe, name=name, embedded_guidance=embedded_guidance)


def _absent_components(folder: str) -> dict:
    """Components a saved folder lists as null (e.g. SD3 without T5) must be passed as None."""
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        return {}
    with open(index) as f:
        spec = json.load(f)
    return {k: None for k, v in spec.items() if isinstance(v, list) and v[0] is None}


def load_model(name_or_path: str, dtype: str | torch.dtype = "float32", device: str | None = None,
               embedded_guidance: float | None = None) -> DiffusersModel:
    """Load any supported diffusers pipeline with ``from_pretrained`` (hub id, local folder or shipped short name)."""
    from diffusers import DiffusionPipeline

    from inversa.core.checks import device as check_device
    from inversa.tiny import resolve

    name_or_path, defaults = resolve(name_or_path)
    if embedded_guidance is None:
        embedded_guidance = defaults.get("embedded_guidance")

    check_device(device)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InversaError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    local = os.path.isdir(name_or_path)
    if not local and (os.path.sep in name_or_path.strip("/") and os.path.exists(os.path.dirname(name_or_path))
                      or name_or_path.startswith((".", "/"))):
        raise InversaError(f"model folder {name_or_path} does not exist")
    try:
        pipe = DiffusionPipeline.from_pretrained(name_or_path, dtype=dtype, local_files_only=local,
                                                 **_absent_components(name_or_path))
    except InversaError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InversaError(f"cannot load model {name_or_path!r}: {first}") from exc
    if not hasattr(pipe, "encode_prompt"):
        raise InversaError(f"unsupported pipeline {type(pipe).__name__} in {name_or_path} (no text encoder); "
                           f"supported: {SUPPORTED}")
    if device:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return from_pipeline(pipe, name=name_or_path, embedded_guidance=embedded_guidance)


def as_model(model) -> Model:
    """A model, or one loaded with :func:`load_model` from its name or folder."""
    return load_model(model) if isinstance(model, str) else model
