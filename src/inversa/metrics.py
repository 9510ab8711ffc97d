"""Image and latent quality metrics. Images are tensors in [-1, 1], (B, 3, H, W); one value per image."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB on the [0, 1] scale (inf for identical images)."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(a: Tensor, b: Tensor, window: int = 11) -> Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window) on [0, 1] images, mean over channels."""
    lum, cs = _ssim_maps((a.float() + 1) / 2, (b.float() + 1) / 2, window)
    return (lum * cs).flatten(1).mean(1)


def ssim_map(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Per-pixel SSIM (B, H, W) on [-1, 1] images, reflect-padded so it lines up with masks."""
    p = window // 2
    a, b = (F.pad(x.float(), [p] * 4, mode="reflect") for x in (a, b))
    lum, cs = _ssim_maps((a + 1) / 2, (b + 1) / 2, window)
    return (lum * cs).mean(1)


def latent_mse(a: Tensor, b: Tensor) -> Tensor:
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


def relative_error(a: Tensor, b: Tensor) -> Tensor:
    """||a - b|| / ||b|| per sample."""
    diff = (a.double() - b.double()).flatten(1).norm(dim=1)
    return diff / b.double().flatten(1).norm(dim=1).clamp_min(1e-30)


def summary(original: Tensor, reconstruction: Tensor, z0: Tensor | None = None, z_hat: Tensor | None = None) -> dict:
    """Mean metrics of a batch as plain floats."""
    out = {"psnr": float(psnr(original, reconstruction).mean()), "ssim": float(ssim(original, reconstruction).mean())}
    if z0 is not None and z_hat is not None:
        out["latent_mse"] = float(latent_mse(z0, z_hat).mean())
    return {k: (v if math.isfinite(v) else float("inf")) for k, v in out.items()}


# Multi-scale SSIM -----------------------------------------------------------------------------------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003, five scales


def ms_ssim_scales(height: int, width: int, window: int = 11, max_scales: int = 5) -> int:
    """How many scales fit: the coarsest scale must still hold a full ``window``.

    Rule for small images: use the largest M <= 5 with ``min(H, W) / 2**(M-1) >= window``
    (at least 1) and renormalise the first M standard weights to sum to 1. A 256 px
    image gets all five scales, 64 px gets three, 32 px two, anything smaller one
    (which is then luminance x contrast-structure at full resolution, i.e. SSIM).
    """
    side, m = min(height, width), 1
    while m < max_scales and side / 2 ** m >= window:
        m += 1
    return m


def _ssim_maps(a: Tensor, b: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Luminance and contrast-structure maps of SSIM on [0, 1] images."""
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2
    g = _gaussian(window, 1.5 * window / 11) if window > 1 else torch.ones(1)
    c = a.shape[1]
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    return lum, cs


def _ssim_parts(a: Tensor, b: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Per-image mean luminance term and contrast-structure term (the MS-SSIM factors)."""
    lum, cs = _ssim_maps(a, b, window)
    return lum.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(a: Tensor, b: Tensor, window: int = 11, scales: int | None = None) -> Tensor:
    """Multi-scale SSIM on [-1, 1] images (one value per image, 1 for identical images).

    Contrast-structure at every scale, luminance at the coarsest, combined as a weighted
    geometric mean; 2x2 average pooling between scales. Negative terms are clamped to 0
    so the fractional powers stay real. ``scales`` defaults to :func:`ms_ssim_scales`.
    """
    a, b = (a.float() + 1) / 2, (b.float() + 1) / 2
    m = scales or ms_ssim_scales(a.shape[-2], a.shape[-1], window)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:m], dtype=torch.float64)
    weights = weights / weights.sum()
    out = torch.ones(a.shape[0], dtype=torch.float64)
    for k in range(m):
        lum, cs = _ssim_parts(a, b, window)
        term = (lum * cs) if k == m - 1 else cs
        out = out * term.double().clamp_min(0) ** weights[k]
        if k < m - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return out.float()


# LPIPS (AlexNet) ------------------------------------------------------------------------------------------------

LPIPS_CHANNELS = (64, 192, 384, 256, 256)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class LPIPS(torch.nn.Module):
    """Learned perceptual distance (Zhang et al. 2018), AlexNet variant by default, in plain torch.

    The network is AlexNet's convolutional trunk (activations after each of its five
    ReLUs; another trunk comes as ``features`` with the ``taps`` compared and their
    ``channels``), unit-normalised over channels, squared differences weighted per channel
    by one 1x1 "linear" layer per tap, averaged over space and summed. No weights ship with
    inversa; :func:`load_lpips` reads them from a local file.
    """

    trunk = "AlexNet"

    def __init__(self, features: torch.nn.Sequential | None = None, channels: tuple[int, ...] = LPIPS_CHANNELS,
                 taps: tuple[int, ...] = (1, 4, 7, 9, 11)):
        super().__init__()
        nn = torch.nn
        self.features = features if features is not None else nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.taps = taps  # indices in ``features`` whose outputs are compared (AlexNet: its five ReLUs)

    def _feats(self, x: Tensor) -> list[Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Distance per image for [-1, 1] images (0 for identical images)."""
        fa, fb = self._feats(a.float()), self._feats(b.float())
        return sum(lin((x - y).pow(2)).mean((1, 2, 3)) for lin, x, y in zip(self.lins, fa, fb))


def _read_weights(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_lpips(path: str, net: LPIPS | None = None) -> LPIPS:
    """LPIPS from local weights into ``net`` (default AlexNet): one file holding both parts, or a folder.

    Accepted keys: the trunk as torchvision names it (``features.0.weight`` ...)
    and the linear layers as the reference LPIPS release names them
    (``lin0.model.1.weight`` ... ``lin4``) or ``lins.K.weight``. A folder is searched for
    ``*.pth`` / ``*.pt`` / ``*.safetensors`` files whose keys are merged.
    """
    import glob
    import os

    from .errors import InversaError

    if os.path.isdir(path):
        files = sorted(f for ext in ("pth", "pt", "safetensors") for f in glob.glob(os.path.join(path, f"*.{ext}")))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise InversaError(f"LPIPS weights {path} do not exist")
    state: dict[str, Tensor] = {}
    for f in files:
        try:
            state.update(_read_weights(f))
        except Exception as exc:  # noqa: BLE001
            raise InversaError(f"cannot read LPIPS weights {f} ({type(exc).__name__}: {exc})") from None
    net = LPIPS() if net is None else net
    wanted: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.startswith("features."):
            wanted[k] = v
        elif k.startswith("lin") and k.endswith(".weight"):
            idx = k.split(".")[0][3:] if not k.startswith("lins.") else k.split(".")[1]
            if idx.isdigit():
                wanted[f"lins.{idx}.weight"] = v
    missing = [k for k in net.state_dict() if k not in wanted and k not in ("shift", "scale")]
    if missing:
        raise InversaError(f"LPIPS weights in {path} lack {len(missing)} tensors (e.g. {missing[0]}); "
                           f"expected {net.trunk} 'features.*' and LPIPS 'lin0..lin{len(net.lins) - 1}' weights")
    try:
        net.load_state_dict(wanted, strict=False)
    except RuntimeError as exc:
        raise InversaError(f"LPIPS weights in {path} have the wrong shapes ({str(exc).splitlines()[-1].strip()})") from None
    return net.eval()
