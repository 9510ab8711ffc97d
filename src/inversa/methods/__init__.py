"""The method registry: each inversion method is one module registering one function.

A method is ``fn(model, z0, condition, schedule, **config) -> Trace``. Methods whose
trajectory cannot be replayed by the plain sampler (coupled samplers, noise maps...)
register a ``sample`` function too.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

from ..errors import InversaError


@dataclass
class Trace:
    """What a method returns: the noise, optional trajectory, side state and per-step diagnostics."""

    x_T: Tensor
    trajectory: list[Tensor] | None = None
    state: dict[str, Tensor] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Method:
    name: str
    invert: Callable
    sample: Callable | None = None
    cost: str = ""
    flow_only: bool = False  # needs a flow-matching (velocity) model

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.invert) or "").splitlines()[0]

    def options(self) -> dict:
        """Keyword options and their defaults, for the CLI and the docs."""
        params = list(inspect.signature(self.invert).parameters.values())[4:]
        return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}


REGISTRY: dict[str, Method] = {}


def register(name: str, sample: Callable | None = None, cost: str = "", flow_only: bool = False):
    """Decorator adding an inversion function to the registry under ``name``."""

    def wrap(fn):
        REGISTRY[name] = Method(name, fn, sample, cost, flow_only)
        return fn

    return wrap


def backwards(schedule, desc: str):
    """Step indices from the clean end to the noise, with a progress bar on stderr."""
    from tqdm.auto import tqdm

    return tqdm(list(reversed(range(len(schedule)))), desc=desc, leave=False, disable=None, unit="step")


def step_info(i: int, nfe: int, seconds: float, **extra) -> dict:
    """One step's diagnostics (NFE per sample, wall time, method-specific extras)."""
    return {"step": i, "nfe": nfe, "seconds": seconds, **extra}


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_method(name: str) -> Method:
    _load_all()
    if name not in REGISTRY:
        raise InversaError(f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def available() -> list[str]:
    _load_all()
    return sorted(REGISTRY)
