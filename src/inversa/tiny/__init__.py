"""The embedded default model, its few-step and flow siblings, and tiny pipelines for tests."""
from __future__ import annotations

import os

from inversa.core.errors import InversaError

HERE = os.path.dirname(__file__)
MODEL_DIR = os.path.join(HERE, "model")
# short name -> folder inside the package (``--model embedded-lcm``)
EMBEDDED = {"embedded": MODEL_DIR, "embedded-lcm": os.path.join(HERE, "model_lcm"),
            "embedded-flow": os.path.join(HERE, "model_flow")}
# the LCM sibling was distilled at guidance scales 2-5 (the LCM family's default, 8.5, is LCM-SD1.5's)
DEFAULT_OPTIONS = {"embedded-lcm": {"embedded_guidance": 3.0}}


def embedded_path(name: str = "embedded") -> str:
    """Folder of a model shipped inside the package."""
    folder = EMBEDDED[name]
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise InversaError(f"the {name} model is missing at {folder}; pass --model FOLDER_OR_HUB_ID")
    return folder


def default_model_path() -> str:
    """Folder of the embedded model shipped inside the package."""
    return embedded_path("embedded")


def resolve(name_or_path: str) -> tuple[str, dict]:
    """(folder, default load options) for a short name or a shipped folder; other names pass through."""
    if name_or_path in EMBEDDED:
        return embedded_path(name_or_path), DEFAULT_OPTIONS.get(name_or_path, {})
    for name, folder in EMBEDDED.items():
        if os.path.isdir(name_or_path) and os.path.isdir(folder) and os.path.samefile(name_or_path, folder):
            return name_or_path, DEFAULT_OPTIONS.get(name, {})
    return name_or_path, {}
