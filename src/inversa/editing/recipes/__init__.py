"""Editing recipes: edits that ``inversa edit --method NAME`` runs without an inversion method's sampler.

An inversion method gives a noise (and side state) that the sampler replays under the target
prompt (:mod:`inversa.editing.edit`). A recipe instead maps the source latent straight to the edit,
``fn(model, z0, source, target, *, steps, guidance, source_guidance, negative, spacing,
**options)``, returning the edited latent or ``(source branch, edited latent)``; nothing is
saved for ``inversa reconstruct``. Each recipe lives in its own module.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from inversa.editing.recipes.ddcm import ddcm
from inversa.editing.recipes.flowedit import flowedit
from inversa.editing.recipes.guide_rescale import guide_and_rescale

COMMON = ("steps", "guidance", "source_guidance", "negative", "spacing")  # set by edit() itself


@dataclass(frozen=True)
class Recipe:
    name: str
    fn: Callable
    cost: str
    summary: str
    flow: bool | None = None  # True: flow models only; False: not flow models; None: any

    def fits(self, model) -> bool:
        return self.flow is None or self.flow == (model.prediction == "flow")

    def options(self) -> dict:
        """Keyword options and their defaults (those ``edit()`` does not set itself)."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name not in COMMON}

    def run(self, model, z0: Tensor, source: list[str], target: list[str], **kw) -> tuple[Tensor, Tensor]:
        """(source branch, edited latent); a recipe without a source branch gives ``z0`` as its source."""
        out = self.fn(model, z0, source, target, **kw)
        return out if isinstance(out, tuple) else (z0, out)


RECIPES = {r.name: r for r in (
    Recipe("flowedit", flowedit, "2 rows per step x n_avg (x2 with CFG), flow models",
           "FlowEdit: an ODE from the source latent driven by target minus source velocities (Kulikov et al. 2024).",
           flow=True),
    Recipe("ddcm", ddcm, "2 rows per step (source + target; x2 with CFG)",
           "InfEdit's DDCM: virtual inversion; the source branch is exact by construction (Xu et al. 2024)."),
    Recipe("guide_and_rescale", guide_and_rescale,
           "1 NFE (inversion) + 2 (CFG) + 2 rows fwd+bwd (guider) per step",
           "Guide-and-Rescale: CFG plus self-guidance towards the inversion chain's self-attention maps (ECCV 2024).",
           flow=False),
)}
