"""PIE-Bench's learned metrics from local weights: LPIPS (SqueezeNet), DINO structure distance, CLIP score.

Nothing here downloads: each metric loads only from a path the user gives (a bench flag or
its environment variable) and is otherwise skipped with the reason. Definitions follow
PIE-Bench's evaluation (images in [0, 1]):

- background LPIPS: LPIPS-SqueezeNet of both images multiplied by ``1 - mask``, fed as [-1, 1];
- structure distance: MSE between the cosine self-similarity matrices of the last layer's
  attention keys (all heads concatenated, CLS token included) of DINO ViT-B/8, images resized
  to the model's input size and ImageNet-normalised;
- CLIP score: ``100 * max(cos(image, text), 0)`` with CLIP ViT-L/14 for the target prompt,
  on the whole edited image and on the edited image multiplied by the mask (the edit region).

Weight files, as their releases name the keys:

- LPIPS-SqueezeNet: a file or a folder of ``.pth`` / ``.pt`` / ``.safetensors`` files holding
  torchvision's SqueezeNet 1.1 trunk (``features.0.weight``, ``features.3.squeeze.weight``,
  ``features.3.expand1x1.weight``, ``features.3.expand3x3.weight`` ... up to ``features.12``)
  and the LPIPS release's ``squeeze.pth`` linear layers (``lin0.model.1.weight`` ... ``lin6``).
- DINO: a transformers ``ViTModel`` folder (``config.json`` + weights, e.g. facebook/dino-vitb8).
- CLIP: a transformers ``CLIPModel`` folder with its tokenizer (e.g. openai/clip-vit-large-patch14).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inversa.core.errors import InversaError
from inversa.core.metrics import LPIPS, load_lpips

# flag -> (environment variable, what is missing without it)
SOURCES = {"lpips": ("INVERSA_LPIPS_SQUEEZE_WEIGHTS", "--lpips-squeeze-weights (SqueezeNet 1.1 + LPIPS squeeze.pth)"),
           "structure": ("INVERSA_DINO_WEIGHTS", "--dino-weights (a DINO ViT-B/8 transformers folder)"),
           "clip": ("INVERSA_CLIP_WEIGHTS", "--clip-weights (a CLIP ViT-L/14 transformers folder)")}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""

    def __init__(self, inputs: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inputs, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


def squeezenet_lpips() -> LPIPS:
    """LPIPS on SqueezeNet 1.1's trunk (torchvision's layout); taps at the ends of LPIPS's seven slices."""
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64), Fire(128, 16, 64), pool(),
        Fire(128, 32, 128), Fire(256, 32, 128), pool(), Fire(256, 48, 192), Fire(384, 48, 192),
        Fire(384, 64, 256), Fire(512, 64, 256))
    net = LPIPS(features, channels=(64, 128, 256, 384, 384, 512, 512), taps=(1, 4, 7, 9, 10, 11, 12))
    net.trunk = "SqueezeNet 1.1"
    return net


def _resize(x: Tensor, size: int, mean_std) -> Tensor:
    """[0, 1] images to ``size`` x ``size`` (bicubic), normalised."""
    x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in mean_std)
    return (x - mean) / std


def _folder(path: str, what: str) -> str:
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise InversaError(f"{what} weights {path} are not a transformers model folder (no config.json)")
    return path


def load_dino(path: str):
    """A transformers ViTModel (DINO ViT-B/8) from a local folder."""
    from transformers import ViTModel

    try:
        vit = ViTModel.from_pretrained(_folder(path, "DINO"), add_pooling_layer=False, local_files_only=True)
        return vit.eval()
    except (OSError, ValueError) as exc:
        raise InversaError(f"cannot load DINO ViT from {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def dino_self_similarity(vit, images: Tensor) -> Tensor:
    """(B, T, T) cosine self-similarity of the last layer's keys (heads concatenated) for [0, 1] images."""
    keys = [m for name, m in vit.named_modules() if name.endswith(("k_proj", "attention.key"))][-1]
    seen = []
    hook = keys.register_forward_hook(lambda module, inputs, out: seen.append(out))
    try:
        with torch.no_grad():
            vit(pixel_values=_resize(images, vit.config.image_size, IMAGENET))
    finally:
        hook.remove()
    k = F.normalize(seen[-1].float(), dim=-1)
    return k @ k.transpose(1, 2)


def structure_distance(vit, a: Tensor, b: Tensor) -> Tensor:
    """PIE's structure distance per image: MSE of the two DINO key self-similarity matrices."""
    return (dino_self_similarity(vit, a) - dino_self_similarity(vit, b)).pow(2).mean((1, 2))


def load_clip(path: str):
    """(CLIPModel, tokenizer) from a local transformers folder."""
    from transformers import AutoTokenizer, CLIPModel

    try:
        folder = _folder(path, "CLIP")
        return (CLIPModel.from_pretrained(folder, local_files_only=True).eval(),
                AutoTokenizer.from_pretrained(folder, local_files_only=True))
    except (OSError, ValueError) as exc:
        raise InversaError(f"cannot load CLIP from {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def clip_score(clip, images: Tensor, texts: list[str]) -> Tensor:
    """``100 * max(cos, 0)`` between CLIP embeddings of [0, 1] images and their texts, per image."""
    model, tok = clip
    ids = tok(texts, padding=True, truncation=True, max_length=model.config.text_config.max_position_embeddings,
              return_tensors="pt").to(images.device)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=_resize(images, model.config.vision_config.image_size, CLIP_NORM))
        txt = model.get_text_features(**ids)
    img, txt = (getattr(v, "pooler_output", v) for v in (img, txt))  # transformers 5 may wrap the embeddings
    return 100 * F.cosine_similarity(img, txt, dim=-1).clamp_min(0)


@dataclass
class Learned:
    """The learned metrics the user gave weights for, and why the others are skipped."""

    lpips: LPIPS | None = None
    dino: object = None
    clip: tuple | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def scores(self, source: Tensor, edited: Tensor, mask: Tensor, target_prompt: str) -> dict[str, float | None]:
        """PIE's learned metrics of one edit: images (1, 3, H, W) in [-1, 1], ``mask`` 1 = edited."""
        a, b, m = (source.float() + 1) / 2, (edited.float() + 1) / 2, mask.to(source.device, torch.float32)
        out: dict[str, float | None] = {"lpips": None, "structure": None, "clip_whole": None, "clip_edited": None}
        if self.lpips is not None:
            out["lpips"] = float(self.lpips.to(a.device)(a * (1 - m) * 2 - 1, b * (1 - m) * 2 - 1)[0])
        if self.dino is not None:
            out["structure"] = float(structure_distance(self.dino.to(a.device), a, b)[0])
        if self.clip is not None:
            self.clip[0].to(a.device)
            scores = clip_score(self.clip, torch.cat([b, b * m]), [target_prompt] * 2)
            out["clip_whole"], out["clip_edited"] = float(scores[0]), float(scores[1])
        return out


def load_learned(paths: dict[str, str | None]) -> Learned:
    """Metrics from ``{"lpips"|"structure"|"clip": path or None}``; None falls back to the environment variable."""
    found = {k: paths.get(k) or os.environ.get(env) or None for k, (env, _) in SOURCES.items()}
    out = Learned(skipped={k: f"no weights: pass {SOURCES[k][1]} or set {SOURCES[k][0]}"
                           for k, p in found.items() if p is None})
    if found["lpips"]:
        if not os.path.exists(found["lpips"]):
            raise InversaError(f"LPIPS-SqueezeNet weights {found['lpips']} do not exist")
        out.lpips = load_lpips(found["lpips"], squeezenet_lpips())
    if found["structure"]:
        out.dino = load_dino(found["structure"])
    if found["clip"]:
        out.clip = load_clip(found["clip"])
    return out
