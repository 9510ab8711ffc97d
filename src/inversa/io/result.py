"""The Inversion result: everything needed to regenerate an image, saved as safetensors + JSON."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from torch import Tensor

from inversa.core.errors import InversaError
from inversa.io.consistency import check_metadata
from inversa.io.outputs import staged

FORMAT = "inversa.inversion/1"


@dataclass
class Inversion:
    """An inverted batch: the noise ``x_T``, the schedule it belongs to and any side state.

    ``state`` holds what a method needs to replay its trajectory (per-step guidance
    ``guidance_w`` keyed by ``guidance_t``, null embeddings, offsets, noise maps...);
    ``steps`` holds per-step diagnostics (residual, iterations, nfe, seconds).
    """

    method: str
    model: str
    x_T: Tensor
    z0: Tensor
    timesteps: list[float]
    alphas: list[float]
    sigmas: list[float]
    prompts: list[str] = field(default_factory=lambda: [""])
    negative: list[str] | None = None
    guidance: float = 1.0
    spacing: str = ""
    family: str = ""
    prediction: str = "epsilon"
    config: dict = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)
    trajectory: Tensor | None = None
    steps: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    image_size: list[int] | None = None

    TENSORS = ("x_T", "z0", "trajectory")

    def __len__(self) -> int:
        return self.x_T.shape[0]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def metadata(self) -> dict:
        meta = {k: v for k, v in asdict(self).items() if k not in self.TENSORS and k != "state"}
        meta["format"] = FORMAT
        meta["state_keys"] = sorted(self.state)
        return meta

    def save(self, path: str) -> str:
        """Write ``path`` (a ``.safetensors`` file) with tensors and the JSON metadata; returns the path."""
        from safetensors.torch import save_file

        if os.path.isdir(path) or not path.endswith(".safetensors"):
            path = os.path.join(path, "inversion.safetensors")
        tensors = {k: getattr(self, k) for k in self.TENSORS if getattr(self, k) is not None}
        tensors.update({f"state.{k}": v for k, v in self.state.items()})
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with staged() as stage:
            save_file(tensors, stage(path), metadata={"inversa": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str) -> "Inversion":
        from safetensors import safe_open

        if os.path.isdir(path):
            path = os.path.join(path, "inversion.safetensors")
        from inversa.core.checks import regular_file

        regular_file(path, "inversion file")  # stat first: a fifo is never opened
        try:
            with safe_open(path, framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("inversa", "null"))
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except InversaError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InversaError(f"{path} is not a readable inversion file ({type(exc).__name__})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InversaError(f"{path} is not an inversa inversion (format {FORMAT} expected)")
        meta.pop("format")
        meta.pop("state_keys", None)
        check_metadata(meta, cls, path)
        state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        return cls(**meta, **{k: tensors.get(k) for k in cls.TENSORS}, state=state)
