"""An analytic model whose exact inversion is known: Gaussian data, linear denoiser.

If ``x0 ~ N(mu_c, diag(v))`` then ``E[eps | x_t]`` is affine in ``x_t``, so every
sampler step is affine and the exact inverse of a step is an elementwise linear
solve. Methods are tested against this truth, not only against small residuals.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from inversa.core.types import Condition, Embeds, Schedule, vp_timesteps
from inversa.models.model import Model


class GaussianModel(Model):
    """``Model`` backend for Gaussian data; prompts shift the mean (so guidance matters)."""

    family = "gaussian"

    def __init__(self, shape=(4, 8, 8), prediction: str = "epsilon", seed: int = 0, dtype=torch.float64,
                 train_steps: int = 1000, shift: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.shape, self.prediction, self.dtype, self.train_steps, self.shift = tuple(shape), prediction, dtype, train_steps, shift
        self.mean = (torch.randn(self.shape, generator=g) * 0.5).to(dtype)
        self.var = (0.02 + torch.rand(self.shape, generator=g) * 1.5).to(dtype)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, train_steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.name = f"gaussian-{prediction}"
        self.nfe = 0

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        rows = []
        for p in prompts:
            if not p:
                rows.append(torch.zeros(self.shape, dtype=self.dtype))
                continue
            seed = int(hashlib.sha256(p.encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(self.shape, generator=torch.Generator().manual_seed(seed)).to(self.dtype) * 0.5)
        return Embeds(torch.stack(rows).flatten(1)[:, None, :])

    def sample_data(self, n: int, prompt: str = "", seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        mu = self.mean + self.encode_prompt([prompt]).hidden.view(self.shape)
        return mu + self.var.sqrt() * torch.randn((n, *self.shape), generator=g).to(self.dtype)

    # schedule ---------------------------------------------------------------
    def noise_levels(self, steps: int, spacing: str | None = None, shape=None) -> Schedule:
        if self.prediction == "flow":
            s = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
            s = self.shift * s / (1 + (self.shift - 1) * s)
            return self.schedule_from_timesteps((s * self.train_steps).tolist(), f"flow(shift={self.shift})")
        spacing = spacing or "leading"
        return self.schedule_from_timesteps(vp_timesteps(self.train_steps, steps, spacing, offset=1), spacing)

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom") -> Schedule:
        ts = torch.as_tensor(timesteps, dtype=torch.float64)
        if self.prediction == "flow":
            s = torch.cat([ts / self.train_steps, torch.zeros(1, dtype=torch.float64)])
            return Schedule(ts, 1 - s, s, spacing)
        ac = self.alphas_cumprod[ts.round().long()]
        return Schedule(ts.round(), torch.cat([ac.sqrt(), torch.ones(1, dtype=torch.float64)]),
                        torch.cat([(1 - ac).sqrt(), torch.zeros(1, dtype=torch.float64)]), spacing)

    def _level(self, t: float) -> tuple[float, float]:
        if self.prediction == "flow":
            s = float(t) / self.train_steps
            return 1 - s, s
        a = float(self.alphas_cumprod[int(round(float(t)))])
        return a**0.5, (1 - a) ** 0.5

    # the exact denoiser -----------------------------------------------------------
    def affine(self, t: float, embeds: Embeds) -> tuple[Tensor, Tensor]:
        """(P, q) with network output ``P * x + q`` (q per sample)."""
        a, s = self._level(t)
        mu = self.mean + embeds.hidden.reshape(len(embeds), *self.shape).to(self.dtype)
        den = a * a * self.var + s * s
        # eps_hat = s (x - a mu) / den, x0_hat = mu + a v (x - a mu) / den
        pe, qe = s / den, -s * a * mu / den
        px, qx = a * self.var / den, mu - a * a * self.var * mu / den
        if self.prediction == "epsilon":
            return pe.expand_as(qe), qe
        if self.prediction == "v_prediction":
            return a * pe - s * px, a * qe - s * qx
        return pe - px, qe - qx

    def forward(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        self.nfe += x.shape[0]
        p, q = self.affine(t, embeds.expand(x.shape[0]))
        return (p * x.to(self.dtype) + q).to(x.dtype)

    def guided_affine(self, t: float, condition: Condition, n: int, guidance=None) -> tuple[Tensor, Tensor]:
        w = condition.guidance if guidance is None else guidance
        p, qc = self.affine(t, condition.cond.expand(n))
        if condition.uncond is None or w == 1.0:
            return p, qc
        _, qu = self.affine(t, condition.uncond.expand(n))
        return p, qu + w * (qc - qu)

    def exact_inversion(self, z0: Tensor, schedule: Schedule, condition: Condition,
                        guidance: list[float] | None = None) -> list[Tensor]:
        """The exact states ``[x_0 (= x_T), ..., x_N (= z0)]`` of the deterministic sampler."""
        from inversa.core.samplers import coefficients

        states = [z0.to(self.dtype)]
        for i in reversed(range(len(schedule))):
            A, B = coefficients(self.prediction, *schedule.levels(i))
            p, q = self.guided_affine(float(schedule.timesteps[i]), condition, z0.shape[0],
                                      None if guidance is None else guidance[i])
            states.insert(0, (states[0] - B * q) / (A + B * p))
        return states

    def flow_noise(self, z0: Tensor, condition: Condition) -> Tensor:
        """The continuous flow ODE's noise for ``z0`` (flow models): ``(z0 - mu_w) / sqrt(v)``.

        The (guided) velocity is that of Gaussian data with the guided mean ``mu_w``, and the
        probability-flow ODE of a diagonal Gaussian is the monotone affine map to N(0, I).
        """
        n, w = z0.shape[0], condition.guidance

        def mean(embeds):
            return self.mean + embeds.expand(n).hidden.reshape(n, *self.shape).to(self.dtype)

        mu_w = mean(condition.cond)
        if condition.uncond is not None and w != 1.0:
            mu_w = mean(condition.uncond) + w * (mu_w - mean(condition.uncond))
        return (z0.to(self.dtype) - mu_w) / self.var.sqrt()


def affine_preimage(f, y: Tensor) -> Tensor:
    """``x`` with ``f(x) = y`` for an elementwise affine ``f``: any sampler run on the Gaussian model.

    ``f(x) = a x + b`` with ``b = f(0)`` and ``a = f(1) - f(0)``, so a method's own sampler
    gives the exact noise it should have found, whatever its step (midpoint, reused velocity...).
    """
    b = f(torch.zeros_like(y))
    return (y - b) / (f(torch.ones_like(y)) - b)
