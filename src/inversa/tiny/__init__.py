"""The embedded default model and tiny pipelines for tests."""
from __future__ import annotations

import os

from ..errors import InversaError

MODEL_DIR = os.path.join(os.path.dirname(__file__), "model")


def default_model_path() -> str:
    """Folder of the embedded model shipped inside the package."""
    if not os.path.isfile(os.path.join(MODEL_DIR, "model_index.json")):
        raise InversaError(f"the embedded model is missing at {MODEL_DIR}; pass --model FOLDER_OR_HUB_ID")
    return MODEL_DIR
