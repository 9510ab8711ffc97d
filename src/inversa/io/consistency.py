"""Does a loaded inversion fit together, and fit the model about to sample it?

An inversion file from another model, cut short or edited by hand would otherwise
sample a junk picture with exit 0. Every check is cheap (no network call).
"""
from __future__ import annotations

import math
import types
import typing

import torch

from inversa.core.errors import InversaError

PER_STEP = ("uncond_hidden", "offsets", "noise_maps")  # (N, B, ...) state, one entry per step


def _fits(value, hint) -> bool:
    """Whether a JSON value matches a dataclass field's annotation (list[str], float | None, ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def check_metadata(meta: dict, cls, path: str) -> None:
    """Metadata keys are the fields of ``cls`` (required ones present) and each value has its field's type."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in cls.TENSORS and f.name != "state"}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(meta) - set(fields))
    if unknown:
        raise InversaError(f"{path}: unknown inversion field(s) {', '.join(unknown)} "
                           "(a newer inversa or an edited file)")
    missing_default = dataclasses.MISSING
    required = [k for k, f in fields.items() if f.default is missing_default and f.default_factory is missing_default]
    missing = [k for k in required if k not in meta]
    if missing:
        raise InversaError(f"{path}: inversion field(s) {', '.join(missing)} missing")
    for key, value in meta.items():
        if not _fits(value, hints[key]):
            raise InversaError(f"{path}: inversion field {key} should be {_name(hints[key])}, got {value!r:.60}")


def _name(hint) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def check_inversion(model, inv) -> None:
    """Refuse an inversion whose parts disagree with each other or with ``model`` (one line each)."""
    _check_self(inv)
    _check_model(model, inv)


def _check_self(inv) -> None:
    x, n, steps = inv.x_T, None, inv.num_steps
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise InversaError(f"inversion x_T must be a floating-point batch, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim not in (4, 5) or 0 in x.shape:
        raise InversaError(f"inversion x_T has shape {tuple(x.shape)}; expected a (batch, channels, height, width) "
                           "latent, or (batch, channels, frames, height, width) for a clip")
    if not torch.isfinite(x).all():
        raise InversaError("inversion x_T holds NaN/inf: the inversion diverged; invert again with more steps")
    n = x.shape[0]
    if inv.z0 is not None and inv.z0.shape != x.shape:
        raise InversaError(f"inversion z0 has shape {tuple(inv.z0.shape)} but x_T {tuple(x.shape)}")
    if steps < 1 or len(inv.alphas) != steps + 1 or len(inv.sigmas) != steps + 1:
        raise InversaError(f"inversion has {steps} timesteps but {len(inv.alphas)} alphas and {len(inv.sigmas)} "
                           f"sigmas (expected {steps + 1}): the file is cut short or edited")
    if not all(math.isfinite(v) for v in [*inv.timesteps, *inv.alphas, *inv.sigmas, inv.guidance]):
        raise InversaError("inversion schedule or guidance holds NaN/inf")
    check_levels(inv.alphas, inv.sigmas, inv.timesteps)
    for what, values in (("prompts", inv.prompts), ("negative prompts", inv.negative)):
        if values is not None and len(values) != n:
            raise InversaError(f"inversion has {len(values)} {what} for a batch of {n}")
    if inv.trajectory is not None and inv.trajectory.shape[:2] != (steps + 1, n):
        raise InversaError(f"inversion trajectory has {inv.trajectory.shape[0]} states for {steps} steps")
    _check_state(inv.state, n, steps, tuple(x.shape[1:]))


def check_levels(alphas, sigmas, timesteps) -> None:
    """A sampling schedule's levels: alpha and sigma in [0, 1], alpha rising and sigma and t falling step by step."""
    for name, values in (("alpha", alphas), ("sigma", sigmas)):
        bad = next((k for k, v in enumerate(values) if not 0.0 <= v <= 1.0), None)
        if bad is not None:
            raise InversaError(f"inversion {name} {values[bad]:g} at level {bad} is outside [0, 1]: the schedule "
                               "is edited or damaged")
    for name, values, sign in (("alphas", alphas, 1), ("sigmas", sigmas, -1), ("timesteps", timesteps, -1)):
        bad = next((k for k in range(1, len(values)) if sign * (values[k] - values[k - 1]) < -1e-9), None)
        if bad is not None:
            raise InversaError(f"inversion {name} are not {'rising' if sign > 0 else 'falling'} from noise to image "
                               f"({values[bad - 1]:g} then {values[bad]:g} at step {bad}): the schedule is edited "
                               "or damaged")


def _check_state(state: dict, n: int, steps: int, latent: tuple) -> None:
    for key, value in state.items():
        if not value.is_floating_point():
            raise InversaError(f"inversion state {key} must be floating point, got {value.dtype}")
    if ("guidance_t" in state) != ("guidance_w" in state):
        raise InversaError("inversion state has only one of guidance_t / guidance_w; both or neither")
    if "guidance_w" in state:
        t, w = state["guidance_t"], state["guidance_w"]
        if t.ndim != 1 or w.ndim not in (1, 2) or w.shape[0] != t.shape[0] or (w.ndim == 2 and w.shape[1] != n):
            raise InversaError(f"inversion guidance_w {tuple(w.shape)} does not match guidance_t {tuple(t.shape)} "
                               f"and a batch of {n}")
    for key in PER_STEP:
        if key in state and tuple(state[key].shape[:2]) != (steps, n):
            raise InversaError(f"inversion {key} has shape {tuple(state[key].shape)}; expected ({steps}, {n}, ...)")
    for key in ("offsets", "noise_maps"):
        if key in state and tuple(state[key].shape[2:]) != latent:
            raise InversaError(f"inversion {key} latents {tuple(state[key].shape[2:])} do not match x_T {latent}")
    if "coupled" in state and tuple(state["coupled"].shape) != (n, *latent):
        raise InversaError(f"inversion coupled latent {tuple(state['coupled'].shape)} "
                           f"does not match x_T {(n, *latent)}")


def _check_model(model, inv) -> None:
    made = f"made with {inv.model!r} ({inv.family or 'unknown family'}, {inv.prediction})"
    if inv.family and inv.family != model.family or inv.prediction != model.prediction:
        raise InversaError(f"this inversion was {made}; model {model.name} is {model.family}, {model.prediction}")
    _check_timesteps(model, inv.timesteps, made)
    video = bool(getattr(model, "video", False))
    if (inv.x_T.ndim == 5) != video:
        want = "(batch, channels, frames, height, width) clip" if video else "(batch, channels, height, width)"
        raise InversaError(f"inversion x_T has shape {tuple(inv.x_T.shape)}; expected a {want} latent for model "
                           f"{model.name}")
    multiple = _latent_multiple(model)
    if multiple:
        h, w = inv.x_T.shape[-2:]
        if h % multiple or w % multiple:
            raise InversaError(f"this inversion was {made}: {h}x{w} latents; model {model.name} takes latent sides "
                               f"that are positive multiples of {multiple}")
    vae = getattr(model, "vae", None)
    if vae is not None:
        channels, latent = getattr(model, "latent_channels", None) or (vae.config.get("latent_channels") or vae.config.get("z_dim")), inv.x_T.shape[1]
        if channels != latent:
            raise InversaError(f"this inversion was {made}: {latent}-channel latents; model {model.name} "
                               f"uses {channels}")
        scale = getattr(model, "vae_scale", 1)
        if inv.image_size and list(inv.image_size) != [inv.x_T.shape[-2] * scale, inv.x_T.shape[-1] * scale]:
            raise InversaError(f"this inversion was {made}: {tuple(inv.x_T.shape[-2:])} latents for "
                               f"{inv.image_size[1]}x{inv.image_size[0]} images; model {model.name} scales by {scale}")
    if model.prediction != "flow" and hasattr(model, "scheduler"):
        mine = model.schedule_from_timesteps(inv.timesteps).alphas[:-1]
        theirs = torch.tensor(inv.alphas[:-1], dtype=torch.float64)
        if not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6):
            k = int((mine - theirs).abs().argmax())
            raise InversaError(f"this inversion was {made}: its noise level at t={inv.timesteps[k]:g} "
                               f"(alpha {float(theirs[k]):.4f}) is not model {model.name}'s ({float(mine[k]):.4f})")


def _latent_multiple(model) -> int | None:
    try:
        return int(model.latent_multiple)
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None


def _check_timesteps(model, timesteps, made: str) -> None:
    """Timesteps the model can take: in ``[0, train_steps)`` and whole numbers for discrete-time (UNet) schedules,
    in ``[0, train_steps]`` for flow models."""
    if not hasattr(model, "scheduler") or not hasattr(model, "train_steps"):
        return
    top = model.train_steps()
    discrete = model.prediction != "flow"
    for k, t in enumerate(timesteps):
        if discrete and abs(t - round(t)) > 1e-6:
            raise InversaError(f"this inversion was {made}: timestep {t:g} at step {k} is fractional; model "
                               f"{model.name} takes whole timesteps 0..{top - 1}")
        if not 0 <= t <= (top - 1 if discrete else top):
            raise InversaError(f"this inversion was {made}: timestep {t:g} at step {k} is outside model "
                               f"{model.name}'s range 0..{top - 1 if discrete else top}")
