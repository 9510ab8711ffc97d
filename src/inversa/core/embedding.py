"""Network input embeddings that are mathematics, not model code (LCM's guidance-scale input)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the guidance scale (LCM's ``time_cond_proj_dim`` input)."""
    w = w.float() * 1000.0
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([emb.sin(), emb.cos()], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb
