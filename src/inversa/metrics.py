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
    a, b = (a.float() + 1) / 2, (b.float() + 1) / 2
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2
    g = _gaussian(window, 1.5 * window / 11)
    c = a.shape[1]
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


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
