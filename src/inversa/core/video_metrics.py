"""Reconstruction metrics of clips (B, 3, F, H, W) in [-1, 1]: per-frame PSNR/SSIM and temporal consistency.

Temporal error (mean, on the [0, 1] scale): ``|(r_{f+1} - r_f) - (s_{f+1} - s_f)|`` between the
reconstruction ``r`` and the source ``s``, i.e. how far the reconstruction's motion and flicker
depart from the source's; 0 when every frame-to-frame change is reproduced.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from inversa.core.metrics import latent_mse, psnr, ssim


def frames_of(clip: Tensor) -> Tensor:
    """(B, 3, F, H, W) -> (B * F, 3, H, W), frame-major within each clip."""
    b, c, f, h, w = clip.shape
    return clip.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def temporal_error(source: Tensor, recon: Tensor) -> Tensor:
    """Mean |frame-difference error| per clip on the [0, 1] scale (0 for one-frame clips)."""
    if source.shape[2] < 2:
        return torch.zeros(source.shape[0])
    ds, dr = source.float().diff(dim=2), recon.float().diff(dim=2)
    return ((dr - ds).abs() / 2).flatten(1).mean(1)


def clip_summary(source: Tensor, recon: Tensor, z0: Tensor | None = None, z_hat: Tensor | None = None) -> dict:
    """Mean PSNR/SSIM over all frames, the per-frame figures (mean over the batch) and the temporal error."""
    b, f = source.shape[0], source.shape[2]
    p = psnr(frames_of(source), frames_of(recon)).view(b, f)
    s = ssim(frames_of(source), frames_of(recon)).view(b, f)
    finite = lambda v: v if math.isfinite(v) else float("inf")  # noqa: E731
    out = {"psnr": finite(float(p.mean())), "ssim": float(s.mean()), "frames": f,
           "psnr_per_frame": [finite(float(v)) for v in p.mean(0)], "ssim_per_frame": [float(v) for v in s.mean(0)],
           "temporal_error": float(temporal_error(source, recon).mean())}
    if z0 is not None and z_hat is not None:
        out["latent_mse"] = float(latent_mse(z0, z_hat).mean())
    return out
