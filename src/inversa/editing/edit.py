"""Text-guided editing from an inversion: the source and target branches sampled together.

Recipe: invert the image with the source prompt, then sample from the same noise
with the target prompt at guidance ``w`` against :func:`default_negative`: the inversion's
unconditional prompt (or side state) when it inverted under guidance, else the empty prompt. The source branch (source prompt,
the inversion's own unconditional prompt or side state) runs in the same batch; for ``direct`` it gets
the recorded offsets and so reproduces the image, and on UNet models its attention
maps are injected into the target branch for the first ``cross_replace`` of the
steps (prompt-to-prompt); on MMDiT flow transformers its image keys and values are
shared into the target branch for the first ``self_replace`` (RF-Solver-Edit). Methods
with their own samplers (EDICT, BDIA, the flow solvers) sample both branches with them.
Editing recipes (``flowedit``, ``ddcm``, ``guide_and_rescale``: :mod:`inversa.editing.recipes`) map the
source latent to the edit themselves.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.samplers import slerp
from inversa.editing.attention import Injector, LocalBlend, Timed, injecting, injection_kind, token_columns, word_tokens
from inversa.editing.options import method_options
from inversa.editing.recipes import RECIPES
from inversa.inversion.api import invert, sample, schedule_of
from inversa.io.images import as_images
from inversa.io.result import Inversion
from inversa.methods import get_method
from inversa.models import decoder
from inversa.models.diffusers.loader import as_model
from inversa.models.model import image_size


@dataclass
class Edit:
    """The edited images, the source branch regenerated beside them, and the inversion used (none for a recipe)."""

    images: Tensor
    source: Tensor
    inversion: Inversion | None


def combine_state(inv: Inversion, pieces: list[tuple[int, float, float]], method: str) -> dict[str, Tensor]:
    """Side state of a new batch whose rows mix rows of ``inv``: ``(row_a, row_b, t)`` -> lerp.

    Used to double a batch for editing (t = 0) and to interpolate (rows 0 and 1). Each key is
    batched and mixed as the method declares it (:class:`~inversa.methods.StateKey`): latent
    state is slerped like the noise, state without a batch dimension is shared.
    """
    spec, out = get_method(method), {}
    for key, value in inv.state.items():
        layout = spec.state_key(key)
        dim = layout.batch_dim
        if dim is None or value.ndim <= dim:
            out[key] = value
            continue
        mix = (lambda u, v, t: slerp(u[None], v[None], t)[0]) if layout.mix == "slerp" else torch.lerp  # one sample
        rows = [value.select(dim, a) if t == 0 else value.select(dim, b) if t == 1
                else mix(value.select(dim, a), value.select(dim, b), t) for a, b, t in pieces]
        out[key] = torch.stack(rows, dim)
    return out


def _per_sample(value, n: int, what: str) -> list[str]:
    values = [value] * n if isinstance(value, str) else list(value)
    if len(values) != n:
        raise InversaError(f"{len(values)} {what} for {n} images")
    return values


def local_blend(model, inv: Inversion, targets: list[str], blend, mask, threshold: float) -> LocalBlend | None:
    """The :class:`LocalBlend` of an edit: from an image mask (1 = edit) or the blended words ``"SRC TGT"``."""
    if blend is None and mask is None:
        return None
    n, size = len(inv), tuple(inv.x_T.shape[-2:])
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.float32)
        mask = mask.reshape(-1, 1, *mask.shape[-2:])
        if mask.shape[0] not in (1, n):
            raise InversaError(f"{mask.shape[0]} masks for {n} images")
        user = (torch.nn.functional.adaptive_max_pool2d(mask, size) > 0).float().expand(n, -1, -1, -1)
        return LocalBlend(n, size, user=user.to(inv.x_T.device), threshold=threshold)
    words = blend.split() if isinstance(blend, str) else list(blend)
    if len(words) != 2:
        raise InversaError(f"blend words must be 'SOURCE_WORD TARGET_WORD', got {blend!r}")
    if injection_kind(model) != "maps":
        raise InversaError("a local blend from words needs a UNet's cross-attention maps; give a mask instead")
    prompts = list(inv.prompts) + targets
    tokens = word_tokens(model, prompts, [words[0]] * n + [words[1]] * n)
    for row, prompt in enumerate(prompts):
        if tokens is None or not tokens[row].any():
            raise InversaError(f"blend word {words[row >= n]!r} is not in the prompt {prompt!r}")
    return LocalBlend(n, size, tokens=tokens, threshold=threshold)


def default_negative(inv: Inversion) -> list[str]:
    """The target branch's negative prompt when the user names none.

    The inversion's unconditional prompt when it was inverted under guidance (null_text, direct...). An
    inversion at w = 1 has none: its source branch takes the source prompt as negative, so guidance leaves
    that branch on the inverted chain, but the target samples with plain CFG against the empty prompt
    (with the source prompt as negative a colour edit pushes away from the source colour and the scene with
    it: shapes edit set, 10 steps, w 7.5, no blend, background 21.5 dB and colour success 50%
    against 24.9 dB and 100%). Coupled samplers (EDICT, BDIA) keep the source's: both of their latents
    must see one guidance field, and with the empty prompt they fall apart (11 and 8 dB). So does
    negative-prompt inversion, whose edit is defined by the source prompt as the negative (Miyake et al.;
    with the empty prompt: 18.2 against 21.6 dB, shape edits 50% against 75%).
    """
    if inv.negative is not None:
        return list(inv.negative)
    keeps_source = get_method(inv.method).target_negative == "source"
    return list(inv.prompts) if keeps_source else [""] * len(inv)


def _injector(model, inv: Inversion, schedule, targets: list[str], negatives: tuple[list, list], cross_replace: float,
              self_replace: float, blend, mask, blend_threshold: float) -> tuple[Injector, bool]:
    """The edit's attention injector and local blend, and whether it hooks the model's attention."""
    def cut(frac):  # halfway past the last injected step: midpoint evaluations (flow solvers) count too
        k = int(round(frac * len(schedule)))
        times = schedule.timesteps.tolist() + [0.0]
        return (times[k - 1] + times[k]) / 2 if k > 0 else None

    injector = Injector(len(inv), cut(cross_replace), cut(self_replace))
    injector.blend = local_blend(model, inv, targets, blend, mask, blend_threshold)
    kind = injection_kind(model)
    refusal = getattr(model, "injection_refusal", None)  # a family whose attention has nothing to inject into
    if refusal and (injector.cross_from is not None or injector.self_from is not None):
        raise InversaError(f"attention injection does not apply to {type(model.pipe).__name__}: {refusal}")
    inject = {"kv": injector.self_from is not None,
              "maps": injector.cross_from is not None or injector.self_from is not None}.get(kind, False)
    inject = inject or (injector.blend is not None and injector.blend.tokens is not None)
    if inject and kind == "maps":  # groups in batch order: unconditional (negatives), then conditional
        source_neg, target_neg = negatives
        injector.columns = token_columns(model, [source_neg, list(inv.prompts)], [target_neg, targets])
    return injector, inject


def _paste_back(source: Tensor, target: Tensor, blend, mask) -> Tensor:
    """The decoder's group norms spread the edit's latents over the image: paste the edit back into the source."""
    m = blend.mask() if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    m = torch.nn.functional.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=target.shape[-2:], mode="bilinear")
    return source + m.to(target) * (target - source)


def sample_branches(model, inv: Inversion, target_prompt, *, guidance: float = 7.5, negative=None,
                    cross_replace: float = 0.4, self_replace: float = 0.0, blend=None, mask=None,
                    blend_threshold: float = 0.5, decode: bool = True):
    """Sample the source and target branches of an edit from ``inv``; returns ``(source, target)``.

    With ``blend`` words or a ``mask`` the target keeps the source's latent outside the edited
    region (:class:`~inversa.editing.attention.LocalBlend`), at every network call and at the end.
    """
    for name, frac in (("cross_replace", cross_replace), ("self_replace", self_replace)):
        if not 0.0 <= frac <= 1.0:
            raise InversaError(f"{name} must be in [0, 1], got {frac}")
    model = as_model(model)
    n = len(inv)
    targets = _per_sample(target_prompt, n, "target prompts")
    source_neg = list(inv.negative) if inv.negative is not None else list(inv.prompts)
    target_neg = default_negative(inv) if negative is None else _per_sample(negative, n, "negative prompts")
    condition = model.condition(list(inv.prompts) + targets, guidance, source_neg + target_neg)
    state = combine_state(inv, [(i, i, 0.0) for i in range(n)] * 2, inv.method)
    if "offsets" in state:  # Direct inversion: only the source branch is pinned to the pivot
        state["offsets"][:, n:] = 0
    joint = dataclasses.replace(inv, x_T=torch.cat([inv.x_T, inv.x_T]), z0=torch.cat([inv.z0, inv.z0]),
                                prompts=list(inv.prompts) * 2, negative=source_neg * 2, state=state)
    schedule = schedule_of(model, inv)
    injector, inject = _injector(model, inv, schedule, targets, (source_neg, target_neg), cross_replace, self_replace,
                                 blend, mask, blend_threshold)
    timed = inject or injector.blend is not None
    with torch.no_grad(), injecting(model, injector) if inject else contextlib.nullcontext():
        z = sample(Timed(model, injector) if timed else model, joint, schedule, condition)
        if injector.blend is not None:
            z = injector.blend.apply(z)
    source, target = z[:n], z[n:]
    if not decode:
        return source, target
    source, target = model.decode(source), model.decode(target)
    if injector.blend is not None:
        target = _paste_back(source, target, injector.blend, mask)
    return source, target


def edit(model, image, source_prompt, target_prompt, method: str = "ddim", *, steps: int = 10,
         guidance: float = 7.5, inversion_guidance: float | None = None, negative=None, cross_replace: float = 0.4,
         self_replace: float = 0.0, blend=None, mask=None, blend_threshold: float = 0.5,
         spacing: str | None = None, size: int | None = None, full: bool = False,
         decoder_inversion: bool | dict = False, **config):
    """Edit ``image`` from ``source_prompt`` to ``target_prompt``; returns the edited images (B, 3, H, W).

    ``inversion_guidance`` defaults to ``guidance`` for methods registered as inverting under guidance
    (``Method.guided``) and to 1 otherwise. ``negative`` is the target branch's negative
    prompt (default: :func:`default_negative`).
    ``cross_replace`` is the fraction of the steps, from the noisy end, with cross-attention maps injected (0 disables; UNet models); ``self_replace``
    likewise for self-attention maps, or on MMDiT flow transformers for the source's keys and values.
    ``blend="SRC TGT"`` (UNet models) edits only where those words attend, ``mask`` (H, W) or
    (B, 1, H, W), 1 = edit, only inside it: the source latent is kept elsewhere.
    A recipe (``method="flowedit"``, ``"ddcm"``, ``"guide_and_rescale"``, :mod:`inversa.editing.recipes`) edits the
    latent itself (``inversion_guidance`` is its source guidance, default 1; no blend or injection).
    ``full=True`` returns an :class:`Edit` with the source branch and the inversion.
    """
    model = as_model(model)
    if inversion_guidance is None:
        inversion_guidance = guidance if method not in RECIPES and get_method(method).guided else 1.0
    images = as_images(image, image_size(model, size))
    if method in RECIPES:
        if blend is not None or mask is not None:
            raise InversaError(f"{method} is an editing recipe without a sampled source branch to blend with; "
                               "a blend or mask needs an inversion method")
        config = method_options(method, config)
        n, z0 = images.shape[0], model.encode(images)
        z0 = decoder.stage(model, images, z0, decoder_inversion)[0]  # the stage invert() would run
        source, target = RECIPES[method].run(
            model, z0, _per_sample(source_prompt, n, "source prompts"), _per_sample(target_prompt, n, "target prompts"),
            steps=steps, guidance=guidance, source_guidance=inversion_guidance, spacing=spacing,
            negative=None if negative is None else _per_sample(negative, n, "negative prompts"), **config)
        source, target = model.decode(source), model.decode(target)
        return Edit(target, source, None) if full else target
    inv = invert(model, images, source_prompt, method=method, steps=steps, guidance=inversion_guidance,
                 spacing=spacing, decoder_inversion=decoder_inversion, **config)
    source, target = sample_branches(model, inv, target_prompt, guidance=guidance, negative=negative,
                                     cross_replace=cross_replace, self_replace=self_replace, blend=blend,
                                     mask=mask, blend_threshold=blend_threshold)
    return Edit(target, source, inv) if full else target


