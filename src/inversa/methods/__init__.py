"""The method registry: each inversion method is one module registering one function.

A method is ``fn(model, z0, condition, schedule, **config) -> Trace``. Methods whose
trajectory cannot be replayed by the plain sampler (coupled samplers, noise maps...)
register a ``sample`` function too. The registration also declares what shared code must not
guess: how each key of the side state is batched and interpolated (:class:`StateKey`), whether the
method inverts under the sampling guidance, the target branch's default negative prompt in an edit,
and how a stock diffusers pipeline replays it (``stock``) or why it cannot.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Literal

from inversa.core.errors import InversaError
from inversa.core.trace import Recorder, Trace  # noqa: F401 - the methods' loop helpers


@dataclass(frozen=True)
class StateKey:
    """How one key of a method's side state is laid out.

    ``batch_dim``: the dimension that runs over the samples (None: one value shared by the batch;
    a value with no such dimension is shared too). ``mix``: how two samples' values interpolate
    (``"slerp"`` for latents like ``x_T``, whose norm must be kept). ``per_step``: what one entry per
    sampling step holds ("null embeddings"), for the one-line error when the step counts differ.
    ``unreplayable``: why a stock pipeline cannot replay this key (empty: it can).
    """

    batch_dim: int | None = 1
    mix: Literal["lerp", "slerp"] = "lerp"
    per_step: str = ""
    unreplayable: str = ""


SHARED = StateKey(batch_dim=None)


@dataclass
class StockHook:
    """What a method adds to a stock pipeline's call beyond its per-step state (:mod:`inversa.inversion.stock`).

    ``kwargs`` go into ``pipe(prompt, **kwargs)``; ``step_end(i, latents)`` returns step ``i``'s
    latents changed as the method's sampler changes them (None: unchanged).
    """

    kwargs: dict = field(default_factory=dict)
    step_end: Callable | None = None


@dataclass(frozen=True)
class Method:
    name: str
    invert: Callable
    sample: Callable | None = None
    cost: str = ""
    flow_only: bool = False  # needs a flow-matching (velocity) model
    state: dict[str, StateKey] = field(default_factory=dict)  # the side state it keeps, key by key
    guided: bool = False  # inverts under the sampling guidance (an edit's inversion guidance defaults to w)
    target_negative: Literal["empty", "source"] = "empty"  # an edit's target-branch negative prompt by default
    # (model, inv) -> StockHook: what a stock pipeline call needs beyond the per-step state (see inversa.inversion.stock)
    stock: Callable | None = None

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.invert) or "").splitlines()[0]

    def options(self) -> dict:
        """Keyword options and their defaults, for the CLI and the docs."""
        params = list(inspect.signature(self.invert).parameters.values())[4:]
        return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}


    def state_key(self, key: str) -> StateKey:
        """The declared layout of ``key``, or a one-line error for state this method does not declare."""
        if key not in self.state:
            raise InversaError(f"method {self.name} keeps state {key!r} that editing does not know how to batch")
        return self.state[key]

    def check_steps(self, state: dict, steps: int) -> None:
        """Per-step state replays only on a schedule with as many steps as it holds."""
        for key, value in state.items():
            what = self.state[key].per_step if key in self.state else ""
            if what and value.shape[0] != steps:
                raise InversaError(f"this inversion holds per-step {what} for {value.shape[0]} steps; "
                                   f"sample with the same number of steps, not {steps}")


REGISTRY: dict[str, Method] = {}


def register(name: str, sample: Callable | None = None, cost: str = "", flow_only: bool = False, **declared):
    """Decorator adding an inversion function to the registry under ``name`` (``declared``: :class:`Method` fields)."""

    def wrap(fn):
        REGISTRY[name] = Method(name, fn, sample, cost, flow_only, **declared)
        return fn

    return wrap


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
