"""The two stateless entry points: ``invert`` an image, ``reconstruct`` it from the result."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from inversa.core import checks as validate
from inversa.core.errors import InversaError
from inversa.core.replay import denoise
from inversa.core.types import Condition, Schedule
from inversa.io.consistency import check_inversion
from inversa.io.images import as_images
from inversa.io.result import Inversion
from inversa.methods import get_method
from inversa.models import decoder
from inversa.models.diffusers.loader import as_model
from inversa.models.model import Model
from inversa.models.model import image_size


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
    ``decoder_inversion`` (True or options of :func:`inversa.models.decoder.invert_decoder`) first
    replaces ``E(x)`` by a latent that decodes closer to the image, lifting the VAE ceiling.
    """
    model = as_model(model)
    spec = get_method(method)
    config = validate.signature_options(method, spec.invert, spec.options(), config)
    validate.steps(steps)
    guidance = validate.guidance(guidance)
    images = as_images(image, image_size(model, size))
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


def reconstruct(model, inv: Inversion, steps: int | None = None, decode: bool = True) -> Tensor:
    """Regenerate the image (or latent, ``decode=False``) from an inversion; ``steps`` may differ from inversion."""
    model = as_model(model)
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
