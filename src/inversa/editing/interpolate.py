"""Interpolation between two images: slerp between their inverted noises, then regenerate.

Side state that a method keeps per sample (null embeddings, noise maps, coupled
latents, offsets) is interpolated linearly beside the noise, so every method's own
sampler runs; at ``alpha`` 0 and 1 the frames are the two reconstructions.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from inversa.core.checks import fraction
from inversa.core.errors import InversaError
from inversa.core.samplers import slerp
from inversa.editing.edit import combine_state
from inversa.inversion.api import invert, reconstruct
from inversa.io.images import as_images
from inversa.models.diffusers.loader import as_model
from inversa.models.model import image_size


def interpolate(model, image_a, image_b, alphas=(0.0, 0.25, 0.5, 0.75, 1.0), prompt: str = "", *,
                method: str = "ddim", steps: int = 10, guidance: float = 1.0, size: int | None = None,
                spacing: str | None = None, decode: bool = True, **config) -> Tensor:
    """Frames (len(alphas), 3, H, W) between ``image_a`` (alpha 0) and ``image_b`` (alpha 1)."""
    model = as_model(model)
    alphas = [fraction(a, "alpha") for a in alphas]
    if not alphas:
        raise InversaError("give at least one alpha")
    size = image_size(model, size)
    a, b = as_images(image_a, size), as_images(image_b, size)
    if a.shape[1:] != b.shape[1:]:
        raise InversaError(f"images A ({a.shape[-1]}x{a.shape[-2]}) and B ({b.shape[-1]}x{b.shape[-2]}) differ in "
                           "size; give --size N to bring both to N x N")
    images = torch.cat([a, b])
    if images.shape[0] != 2:
        raise InversaError("interpolate takes exactly one image A and one image B")
    inv = invert(model, images, prompt, method=method, steps=steps, guidance=guidance, spacing=spacing, **config)
    x_a, x_b = inv.x_T[:1], inv.x_T[1:]
    x_T = torch.cat([slerp(x_a, x_b, a) for a in alphas])
    frames = dataclasses.replace(inv, x_T=x_T, z0=None, trajectory=None, prompts=[prompt] * len(alphas),
                                 negative=None if inv.negative is None else [inv.negative[0]] * len(alphas),
                                 state=combine_state(inv, [(0, 1, a) for a in alphas], method))
    return reconstruct(model, frames, decode=decode)


