"""Image and latent quality metrics. Images are tensors in [-1, 1], (B, 3, H, W); one value per image."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    """[-1, 1] images on the [0, 1] scale the metrics (and PIE-Bench's evaluation) use."""
    return (x.float() + 1) / 2


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB on the [0, 1] scale (inf for identical images); torchmetrics' PSNR."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(_unit(b), _unit(a), data_range=1.0, reduction="none", dim=tuple(range(1, a.ndim)))


def _window(height: int, width: int, window: int) -> tuple[int, float]:
    """The Gaussian window that fits the image (odd, at most its side) and its sigma (1.5 at 11 pixels)."""
    window = min(window, height, width)
    window -= 1 - window % 2
    return window, 1.5 * window / 11


def _ssim(a: Tensor, b: Tensor, window: int, **kw):
    """torchmetrics' SSIM of [0, 1] images with the window that fits them (``kw``: what else it returns)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    k, sigma = _window(a.shape[-2], a.shape[-1], window)
    return structural_similarity_index_measure(a, b, gaussian_kernel=True, sigma=sigma, kernel_size=k,
                                               data_range=1.0, reduction="none", **kw)


def ssim(a: Tensor, b: Tensor, window: int = 11) -> Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window) on [0, 1] images, mean over channels and the
    pixels whose window lies inside the image (torchmetrics 1.4's SSIM, as PIE-Bench's evaluation ran it)."""
    return _ssim(_unit(a), _unit(b), window)


def ssim_map(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Per-pixel SSIM (B, H, W) on [-1, 1] images, reflect-padded so it lines up with masks."""
    return _ssim(_unit(a), _unit(b), window, return_full_image=True)[1].mean(1)


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


def ms_ssim(a: Tensor, b: Tensor, window: int = 11, scales: int | None = None) -> Tensor:
    """Multi-scale SSIM on [-1, 1] images (one value per image, 1 for identical images); torchmetrics' MS-SSIM.

    Contrast-structure at every scale, luminance at the coarsest, combined as a weighted
    geometric mean; 2x2 average pooling between scales. Negative terms are clamped to 0
    (``normalize="relu"``) so the fractional powers stay real. ``scales`` defaults to
    :func:`ms_ssim_scales`, whose weights are renormalised.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    m = scales or ms_ssim_scales(a.shape[-2], a.shape[-1], window)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:m], dtype=torch.float64)
    k, sigma = _window(a.shape[-2], a.shape[-1], window)
    return multiscale_structural_similarity_index_measure(
        _unit(a), _unit(b), gaussian_kernel=True, sigma=sigma, kernel_size=k, data_range=1.0, reduction="none",
        betas=tuple((weights / weights.sum()).tolist()), normalize="relu").float()


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

    from inversa.core.errors import InversaError

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
