"""Guide-and-Rescale (Titov et al., ECCV 2024): editing by self-guidance towards the inversion chain.

The image is inverted with plain DDIM under the source prompt, keeping the chain ``z*_t``.
Sampling from ``z*_T`` with the target prompt adds to classifier-free guidance a self-guidance
term: the gradient of an energy ``E`` that compares the decoder's self-attention maps (and,
with ``feature_scale``, its features) of the current latent with those of ``z*_t``, both under
the source prompt, so the layout of the image is kept while the prompt changes its content.
*Noise rescaling*: the guider's scale is adapted per step so that the norm ratio of the
guider term to the CFG term stays in ``[ratio_min, ratio_max]``.

| code | paper |
|---|---|
| ``chain[i]`` | ``z*_t`` (DDIM inversion with the source prompt) |
| ``energy`` | ``g(z*_t, z_t, t, y_src)``: self-attention map L2 (+ feature L2) over the decoder |
| ``scale``, ``feature_scale`` | guider weights ``v`` |
| ``cfg``, ``guider`` | ``w (eps_trg - eps_0)``, ``v grad g`` (in the network's output: eps, or v) |
| ``ratio_min``, ``ratio_max`` | the noise-rescaling bounds (0.33, 3) |
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from inversa.core import samplers, checks as validate
from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.editing.attention import capturing
from inversa.methods.ddim import naive_inversion


@contextmanager
def _features(net, out: list):
    """Append the output of every decoder (up) block of a UNet to ``out`` while active."""
    hooks = [block.register_forward_hook(lambda module, inputs, output: out.append(output))
             for block in getattr(net, "up_blocks", [])]
    try:
        yield out
    finally:
        for hook in hooks:
            hook.remove()


def energy(model, x: Tensor, ref: Tensor, t: float, embeds: Embeds, feature_scale: float) -> Tensor:
    """Per sample, the mean squared difference of the decoder's self-attention maps (plus ``feature_scale`` x its
    features) at ``x`` and at ``ref`` (no gradient through ``ref``'s)."""
    n = x.shape[0]
    maps, feats = [], []
    with capturing(model, maps), _features(model.net, feats):
        model.forward(torch.cat([x, ref]), t, Embeds.cat([embeds, embeds]))
    if not maps:
        raise InversaError("guide_and_rescale needs a UNet with self-attention in its decoder (up blocks)")

    def l2(parts):
        return sum(((p.reshape(2, n, -1)[0] - p.reshape(2, n, -1)[1].detach()) ** 2).mean(-1) for p in parts)

    return l2(maps) + (feature_scale * l2(feats) if feature_scale else 0.0)


def _norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def guide_and_rescale(model, z0: Tensor, source: list[str], target: list[str], *, steps: int = 10,
                      guidance: float = 7.5, source_guidance: float = 1.0, negative: list[str] | None = None,
                      spacing: str | None = None, scale: float = 1000.0, feature_scale: float = 0.0,
                      ratio_min: float = 0.33, ratio_max: float = 3.0) -> tuple[Tensor, Tensor]:
    """Source latent (``z0``, the chain's end) and edited latent of ``z0`` from ``source`` to ``target`` prompts.

    The empty prompt is the unconditional one (``negative`` replaces it for the target).
    ``scale`` is the guider's weight before rescaling: the mean squared map difference has
    gradients of about 1e-3 of the noise's norm (embedded model), hence 1000; without a CFG
    term (guidance 1) nothing rescales it.
    """
    if not 0 < ratio_min <= ratio_max:
        raise InversaError(f"guide_and_rescale needs 0 < ratio_min <= ratio_max; got {ratio_min}, {ratio_max}")
    if model.prediction == "flow":
        raise InversaError("guide_and_rescale needs a UNet model (self-attention maps); this model is flow matching")
    n = z0.shape[0]
    schedule = model.schedule(steps, spacing, shape=tuple(z0.shape))
    validate.invertible(model.prediction, schedule)
    chain = naive_inversion(model, z0, model.condition(source, source_guidance, ""), schedule, desc="guide_and_rescale")[0]
    src = model.encode_prompt(source)
    condition = model.condition(target, guidance, negative or [""] * n)
    z = chain[0]
    for i in range(len(schedule)):
        t = float(schedule.timesteps[i])
        with torch.no_grad():
            if condition.guided:
                u, c = model.predict_parts(z, t, condition)
                cfg = condition.guidance * (c - u)
            else:
                u = model.predict(z, t, condition)
                cfg = torch.zeros_like(z)
        x = z.detach().requires_grad_(True)
        with torch.enable_grad():
            guider = scale * torch.autograd.grad(energy(model, x, chain[i], t, src, feature_scale).sum(), x)[0]
        if condition.guided:  # noise rescaling: keep |guider| / |cfg| in [ratio_min, ratio_max]
            ratio = _norm(guider) / _norm(cfg).clamp_min(1e-20)
            guider = guider * ratio.clamp(ratio_min, ratio_max) / ratio.clamp_min(1e-20)
        z = samplers.step(model.prediction, z, u + cfg + guider, *schedule.levels(i)).detach()
    return chain[-1], z
