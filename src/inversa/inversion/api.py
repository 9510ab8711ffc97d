"""The two stateless entry points: ``invert`` an image, ``reconstruct`` it from the result."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from . import decoder, samplers, validate
from .consistency import check_inversion
from .errors import InversaError
from .methods import get_method
from .model import Condition, Embeds, Model, Schedule, load_model
from .result import Inversion


def _as_model(model) -> Model:
    return load_model(model) if isinstance(model, str) else model


def image_size(model: Model, size: int | None) -> int | None:
    """Side images are cropped and resized to: ``None`` -> the model's size, ``0`` -> keep (CLI and API alike)."""
    return model.default_size() if size is None else (size or None)


def _as_images(image, size: int | None) -> Tensor:
    from .images import load_image

    if isinstance(image, Tensor):
        return image if image.ndim in (4, 5) else image[None]  # (B, 3, H, W) images or (B, 3, F, H, W) clips
    if isinstance(image, str):
        return load_image(image, size)
    if isinstance(image, (list, tuple)):
        return torch.cat([_as_images(i, size) for i in image])
    raise InversaError(f"cannot invert an object of type {type(image).__name__}; give a path or a tensor")


def condition_of(model: Model, inv: Inversion) -> Condition:
    """Re-encode the inversion's prompts (embeddings are derived, never stored)."""
    return model.condition(inv.prompts, inv.guidance, inv.negative)


def schedule_of(model: Model, inv: Inversion, steps: int | None = None) -> Schedule:
    sched = model.schedule_from_timesteps(inv.timesteps, inv.spacing)
    sched = Schedule(sched.timesteps, torch.tensor(inv.alphas, dtype=torch.float64),
                     torch.tensor(inv.sigmas, dtype=torch.float64), inv.spacing)
    return model.resample(sched, steps) if steps else sched


def invert(model, image, prompt: str | list[str] = "", *, method: str = "preciseinv", steps: int = 50,
           guidance: float = 1.0, negative: str | list[str] | None = "", spacing: str | None = None,
           strength: float = 1.0, size: int | None = None, keep_trajectory: bool = False,
           decoder_inversion: bool | dict = False, **config) -> Inversion:
    """Find the noise from which ``model`` regenerates ``image`` with ``method``.

    ``image`` is a path, a list of paths or a (B, 3, H, W) tensor in [-1, 1] (for the
    Gaussian oracle: the data itself). Paths are centre-cropped and resized to ``size``
    (default: the model's size, as on the command line; 0 keeps the image's own size).
    Extra keywords configure the method and are checked against its signature.
    ``decoder_inversion`` (True or options of :func:`inversa.decoder.invert_decoder`) first
    replaces ``E(x)`` by a latent that decodes closer to the image, lifting the VAE ceiling.
    """
    model = _as_model(model)
    spec = get_method(method)
    config = validate.method_options(method, config)
    validate.steps(steps)
    guidance = validate.guidance(guidance)
    images = _as_images(image, image_size(model, size))
    validate.megapixels(*images.shape[-2:], model.device)
    n = images.shape[0]
    prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
    if len(prompts) != n:
        raise InversaError(f"{len(prompts)} prompts for {n} images")
    z0 = model.encode(images)
    schedule = model.schedule(steps, spacing, strength, shape=tuple(z0.shape))
    validate.invertible(model.prediction, schedule)
    z0, decoder_stats = decoder.stage(model, images, z0, decoder_inversion)
    condition = model.condition(prompts, guidance, negative)
    model.nfe = 0
    start = time.perf_counter()
    opts = {"keep_trajectory": keep_trajectory} if "keep_trajectory" in spec.options() else {}
    trace = spec.invert(model, z0, condition, schedule, **opts, **config)
    seconds = time.perf_counter() - start
    if not torch.isfinite(trace.x_T).all():
        raise InversaError(f"{method} inversion diverged (x_T holds NaN/inf); try more steps or another method")
    negs = None if condition.uncond is None else ([negative] * n if isinstance(negative, str) else list(negative))
    return Inversion(
        method=method, model=model.name, x_T=trace.x_T.detach(), z0=z0.detach(),
        timesteps=schedule.timesteps.tolist(), alphas=schedule.alphas.tolist(), sigmas=schedule.sigmas.tolist(),
        prompts=prompts, negative=negs, guidance=float(guidance), spacing=schedule.spacing, family=model.family,
        prediction=model.prediction, config={k: v for k, v in config.items()}, state=trace.state,
        trajectory=torch.stack(trace.trajectory).detach() if keep_trajectory and trace.trajectory else None,
        steps=trace.steps, stats={"seconds": seconds, "nfe": model.nfe / n, **schedule.terminal(), **decoder_stats},
        image_size=list(images.shape[-2:]))


def denoise(model: Model, x_T: Tensor, schedule: Schedule, condition: Condition,
            state: dict[str, Tensor] | None = None) -> Tensor:
    """The sampler from ``x_T``, replaying the side state a method recorded (see :func:`denoise_step`).

    Per-step state must hold one entry per step of ``schedule`` (:func:`sample` checks it against
    the method's declaration).
    """
    state = state or {}
    x = x_T
    for i in range(len(schedule)):
        x = denoise_step(model, x, i, schedule, condition, state)
    return x


def denoise_step(model: Model, x: Tensor, i: int, schedule: Schedule, condition: Condition,
                 state: dict[str, Tensor]) -> Tensor:
    """Step ``i`` of the sampler with what the state records for it.

    ``guidance_t``/``guidance_w``: per-step guidance keyed by timestep (nearest is used
    when sampling on other timesteps); ``uncond_hidden``: per-step unconditional
    embeddings (N, B, L, D); ``offsets``: added after the DDIM step (N, B, ...);
    ``noise_maps``: a DDPM step (noise scale ``noise_eta``, default 1) adding the map, or
    the map itself on a noiseless step (N, B, ...).
    """
    t, levels = float(schedule.timesteps[i]), schedule.levels(i)
    w = guidance_at(state, t) if "guidance_w" in state else None
    if "uncond_hidden" in state:
        condition = Condition(condition.cond, Embeds(state["uncond_hidden"][i], condition.uncond.pooled
                                                     if condition.uncond is not None else None), condition.guidance)
    out = model.predict(x, t, condition, w)
    if "noise_maps" in state:
        std = samplers.ddpm_noise(*levels, eta=float(state.get("noise_eta", 1.0)))
        return samplers.step(model.prediction, x, out, *levels, noise=std) + (std or 1.0) * state["noise_maps"][i].to(x)
    x = samplers.step(model.prediction, x, out, *levels)
    return x + state["offsets"][i].to(x) if "offsets" in state else x


def guidance_at(state: dict[str, Tensor], t: float):
    """The recorded guidance scale of the nearest recorded timestep (per sample if recorded so)."""
    ts = state["guidance_t"].double()
    j = int((ts - t).abs().argmin())
    w = state["guidance_w"][j]
    return w if w.ndim else float(w)


def reconstruct(model, inv: Inversion, steps: int | None = None, decode: bool = True) -> Tensor:
    """Regenerate the image (or latent, ``decode=False``) from an inversion; ``steps`` may differ from inversion."""
    model = _as_model(model)
    check_inversion(model, inv)
    if steps is not None:
        validate.steps(steps)
    schedule = schedule_of(model, inv, steps)
    condition = condition_of(model, inv)
    with torch.no_grad():
        z = sample(model, inv, schedule, condition)
    return model.decode(z) if decode else z


def sample(model, inv: Inversion, schedule: Schedule, condition: Condition) -> Tensor:
    """Run the inversion's own sampler (EDICT, BDIA, ...) or :func:`denoise` with its side state."""
    spec = get_method(inv.method)
    spec.check_steps(inv.state, len(schedule))
    if spec.sample is not None:
        return spec.sample(model, inv, schedule, condition)
    return denoise(model, inv.x_T, schedule, condition, inv.state)
