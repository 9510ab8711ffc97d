"""Options of an inversion method or an editing recipe, by name, checked against its signature."""
from __future__ import annotations

from inversa.core.checks import signature_options
from inversa.editing.recipes import RECIPES
from inversa.methods import get_method


def method_options(method: str, options: dict) -> dict:
    """``options`` of ``method`` (an inversion method or an editing recipe, :mod:`inversa.editing.recipes`)
    checked as :func:`inversa.core.checks.signature_options` checks them."""
    if method in RECIPES:
        return signature_options(method, RECIPES[method].fn, RECIPES[method].options(), options)
    spec = get_method(method)
    return signature_options(method, spec.invert, spec.options(), options)
