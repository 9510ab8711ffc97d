"""One adapter over diffusers pipelines: the only place that knows about model families.

Methods see a :class:`Model`: ``encode``/``decode`` between images in [-1, 1] and
latents, ``encode_prompt`` for text, ``schedule`` for noise levels and ``predict``
for the raw network output (epsilon, v or flow velocity, named by
``model.prediction``) with classifier-free guidance. The step algebra lives in
:mod:`inversa.samplers`.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .errors import InversaError

SUPPORTED = "StableDiffusion 1.x/2.x, StableDiffusionXL (incl. Turbo), LatentConsistencyModel, StableDiffusion3"
SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class Embeds:
    """A prompt encoding: token states and, for SDXL/SD3, the pooled vector. Batch first."""

    hidden: Tensor
    pooled: Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def expand(self, n: int) -> "Embeds":
        if len(self) == n:
            return self
        if len(self) != 1:
            raise InversaError(f"{len(self)} prompts for a batch of {n} images")
        return Embeds(self.hidden.expand(n, *self.hidden.shape[1:]),
                      None if self.pooled is None else self.pooled.expand(n, *self.pooled.shape[1:]))

    def select(self, index) -> "Embeds":
        return Embeds(self.hidden[index], None if self.pooled is None else self.pooled[index])

    @staticmethod
    def cat(parts: list["Embeds"]) -> "Embeds":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Embeds(torch.cat([p.hidden for p in parts]), pooled)

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        out = {f"{prefix}.hidden": self.hidden}
        if self.pooled is not None:
            out[f"{prefix}.pooled"] = self.pooled
        return out

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor], prefix: str) -> "Embeds | None":
        if f"{prefix}.hidden" not in tensors:
            return None
        return Embeds(tensors[f"{prefix}.hidden"], tensors.get(f"{prefix}.pooled"))


@dataclass
class Condition:
    """What the network is conditioned on: prompt, optional unconditional prompt, guidance scale."""

    cond: Embeds
    uncond: Embeds | None = None
    guidance: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance != 1.0

    def with_guidance(self, w: float) -> "Condition":
        return replace(self, guidance=float(w))


@dataclass(frozen=True)
class Schedule:
    """Noise levels of a sampling run, noisiest first.

    Level ``i`` (``x = alphas[i] x0 + sigmas[i] eps``) is the state before step ``i``,
    whose network input time is ``timesteps[i]``; level ``N`` is the clean latent.
    """

    timesteps: Tensor
    alphas: Tensor
    sigmas: Tensor
    spacing: str = ""

    def __len__(self) -> int:
        return len(self.timesteps)

    def levels(self, i: int) -> tuple[float, float, float, float]:
        """(alpha_i, sigma_i, alpha_{i+1}, sigma_{i+1}) of step ``i``."""
        a, s = self.alphas.tolist(), self.sigmas.tolist()
        return a[i], s[i], a[i + 1], s[i + 1]

    def terminal(self) -> dict[str, float]:
        """The starting noise level: how much image is left in x_T."""
        a, s = float(self.alphas[0]), float(self.sigmas[0])
        return {"t_T": float(self.timesteps[0]), "alpha_T": a, "sigma_T": s, "snr_T": a * a / max(s * s, 1e-30)}


def vp_timesteps(train_steps: int, steps: int, spacing: str, offset: int = 0) -> list[int]:
    """Discrete timesteps of a variance-preserving sampler, as diffusers' DDIM spaces them."""
    if steps < 1 or steps > train_steps:
        raise InversaError(f"steps must be between 1 and {train_steps}, got {steps}")
    if spacing == "leading":
        ratio = train_steps // steps
        ts = [i * ratio + offset for i in range(steps)][::-1]
    elif spacing == "trailing":
        ratio = train_steps / steps
        ts = [round(train_steps - i * ratio) - 1 for i in range(steps)]
    elif spacing == "linspace":
        ts = [round(v) for v in torch.linspace(0, train_steps - 1, steps, dtype=torch.float64).tolist()][::-1]
    else:
        raise InversaError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return [min(max(t, 0), train_steps - 1) for t in ts]


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the guidance scale (LCM's ``time_cond_proj_dim`` input)."""
    w = w.float() * 1000.0
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([emb.sin(), emb.cos()], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class Model:
    """Interface every backend offers to the inversion methods (see :class:`DiffusersModel`)."""

    name: str = "model"
    family: str = ""
    prediction: str = "epsilon"
    device = torch.device("cpu")
    dtype = torch.float32
    nfe: int = 0  # network evaluations (per sample) since the counter was last reset

    # images <-> latents -------------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        return images

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        return latents

    def check_size(self, height: int, width: int) -> None:
        return None

    def default_size(self) -> int | None:
        return None

    # text ---------------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Embeds:
        raise NotImplementedError

    def condition(self, prompts: list[str] | str = "", guidance: float = 1.0,
                  negative: list[str] | str | None = "") -> Condition:
        """Encode prompts (and the negative/unconditional prompt when guidance is used)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cond = self.encode_prompt(prompts)
        uncond = None
        if guidance != 1.0 and negative is not None:
            negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
            uncond = self.encode_prompt(negative)
        return Condition(cond, uncond, float(guidance))

    # noise levels -------------------------------------------------------------
    def schedule(self, steps: int, spacing: str | None = None, strength: float = 1.0) -> Schedule:
        raise NotImplementedError

    def schedule_from_timesteps(self, timesteps: list[float], spacing: str = "custom") -> Schedule:
        raise NotImplementedError

    def resample(self, schedule: Schedule, steps: int) -> Schedule:
        """A schedule with another number of steps over the same noise range (sampling != inversion steps)."""
        if steps == len(schedule):
            return schedule
        ts = schedule.timesteps.double()
        new = torch.linspace(float(ts[0]), float(ts[-1]), steps, dtype=torch.float64)
        return self.schedule_from_timesteps(new.tolist(), spacing=f"resampled({schedule.spacing})")

    # network ------------------------------------------------------------------
    def forward(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        """Raw network output for a batch (no guidance)."""
        raise NotImplementedError

    def predict_parts(self, x: Tensor, t: float, condition: Condition) -> tuple[Tensor, Tensor]:
        """(unconditional, conditional) outputs in one batched call."""
        n = x.shape[0]
        both = Embeds.cat([condition.uncond.expand(n), condition.cond.expand(n)])
        out = self.forward(torch.cat([x, x]), t, both)
        return out[:n], out[n:]

    def predict(self, x: Tensor, t: float, condition: Condition, guidance: float | Tensor | None = None) -> Tensor:
        """Guided output ``u + w (c - u)``; ``guidance`` overrides the condition's scale (a float or per sample)."""
        w = condition.guidance if guidance is None else guidance
        if condition.uncond is None or (not torch.is_tensor(w) and w == 1.0):
            return self.forward(x, t, condition.cond.expand(x.shape[0]))
        if not torch.is_tensor(w) and w == 0.0:
            return self.forward(x, t, condition.uncond.expand(x.shape[0]))
        u, c = self.predict_parts(x, t, condition)
        if torch.is_tensor(w):
            w = w.to(u).view(-1, *([1] * (u.ndim - 1)))
        return u + w * (c - u)


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class DiffusersModel(Model):
    """A diffusers pipeline seen through :class:`Model`."""

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        self.pipe = pipe
        self.name = name or getattr(pipe, "name_or_path", "") or type(pipe).__name__
        self.net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        for part in pipe.components.values():
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False)
        self.vae = getattr(pipe, "vae", None)
        if self.net is None or not hasattr(pipe, "scheduler"):
            raise InversaError(f"unsupported pipeline {type(pipe).__name__}; supported: {SUPPORTED}")
        self.scheduler = pipe.scheduler
        cfg = self.net.config
        scheduler_name = type(self.scheduler).__name__
        if getattr(pipe, "transformer", None) is not None:
            if "FlowMatch" not in scheduler_name:
                raise InversaError(f"unsupported transformer pipeline with {scheduler_name}; supported: {SUPPORTED}")
            self.family, self.prediction = "sd3", "flow"
        else:
            self.prediction = self.scheduler.config.get("prediction_type", "epsilon")
            if self.prediction not in ("epsilon", "v_prediction"):
                raise InversaError(f"unsupported prediction type {self.prediction!r}; supported: epsilon, v_prediction")
            if cfg.get("addition_embed_type") == "text_time":
                self.family = "sdxl"
            elif cfg.get("time_cond_proj_dim"):
                self.family = "lcm"
            else:
                self.family = "sd"
        self.embedded_guidance = embedded_guidance if embedded_guidance is not None else 8.5
        self.device = self.net.device
        self.dtype = self.net.dtype
        # latents and outputs stay float32, or float64 for a float64 model (exactness tests)
        self.work_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        self.nfe = 0

    # images ---------------------------------------------------------------
    @property
    def _latent_multiple(self) -> int:
        if self.family == "sd3":
            return self.net.config.patch_size
        return 2 ** (len(self.net.config.block_out_channels) - 1)

    def check_size(self, height: int, width: int) -> None:
        k = self.vae_scale * self._latent_multiple
        if height % k or width % k or height < k or width < k:
            raise InversaError(f"image size {width}x{height} does not fit model {self.name}: "
                               f"both sides must be positive multiples of {k} (use --size)")

    def default_size(self) -> int:
        size = self.net.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale

    def encode(self, images: Tensor) -> Tensor:
        self.check_size(images.shape[-2], images.shape[-1])
        if self.vae is None:
            return images.to(self.work_dtype)
        with torch.no_grad():
            dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        z = dist.mean.to(self.work_dtype)
        shift = self.vae.config.get("shift_factor") or 0.0
        return (z - shift) * self.vae.config.scaling_factor

    def decode(self, latents: Tensor, grad: bool = False) -> Tensor:
        """Images in [-1, 1]; ``grad=True`` keeps the graph and skips the clamp (decoder inversion)."""
        if self.vae is None:
            return latents.float() if grad else latents.float().clamp(-1, 1)
        shift = self.vae.config.get("shift_factor") or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        with torch.set_grad_enabled(grad):
            img = self.vae.decode(z.to(self.device, self.vae.dtype)).sample
        return img.float() if grad else img.float().clamp(-1, 1)

    # text -----------------------------------------------------------------
    def encode_prompt(self, prompts: list[str]) -> Embeds:
        fn = self.pipe.encode_prompt
        kw = dict(prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        for extra in ("prompt_2", "prompt_3"):
            if _accepts(fn, extra):
                kw[extra] = None
        with torch.no_grad():
            out = fn(**kw)
        if self.family in ("sdxl", "sd3"):
            return Embeds(out[0].float(), out[2].float())
        return Embeds(out[0].float())

    # schedule -------------------------------------------------------------
    def _train_steps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def schedule(self, steps: int, spacing: str | None = None, strength: float = 1.0) -> Schedule:
        if not 0.0 < strength <= 1.0:
            raise InversaError(f"strength must be in (0, 1], got {strength}")
        if self.family == "sd3":
            sched = type(self.scheduler).from_config(self.scheduler.config)
            sched.set_timesteps(steps)
            sigmas = sched.sigmas.double()
            spacing = f"flow(shift={self.scheduler.config.get('shift', 1.0)})"
            out = Schedule(sched.timesteps.double(), 1.0 - sigmas, sigmas, spacing)
        elif self.family == "lcm" and spacing is None:
            sched = type(self.scheduler).from_config(self.scheduler.config)
            sched.set_timesteps(steps)
            out = self.schedule_from_timesteps(sched.timesteps.tolist(), spacing="lcm")
        else:
            spacing = spacing or self.scheduler.config.get("timestep_spacing", "leading")
            ts = vp_timesteps(self._train_steps(), steps, spacing, self.scheduler.config.get("steps_offset", 0))
            out = self.schedule_from_timesteps(ts, spacing)
        keep = min(max(int(round(steps * strength)), 1), steps)
        start = steps - keep
        return Schedule(out.timesteps[start:], out.alphas[start:], out.sigmas[start:], out.spacing)

    def schedule_from_timesteps(self, timesteps, spacing: str = "custom") -> Schedule:
        ts = torch.as_tensor(timesteps, dtype=torch.float64)
        if self.family == "sd3":
            s = torch.cat([ts / self._train_steps(), torch.zeros(1, dtype=torch.float64)])
            return Schedule(ts, 1.0 - s, s, spacing)
        ts = ts.round()
        ac = self.scheduler.alphas_cumprod.double()[ts.long()]
        a = torch.cat([ac.sqrt(), torch.ones(1, dtype=torch.float64)])
        s = torch.cat([(1 - ac).sqrt(), torch.zeros(1, dtype=torch.float64)])
        return Schedule(ts, a, s, spacing)

    # network --------------------------------------------------------------
    def forward(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        n = x.shape[0]
        self.nfe += n
        x_in = x.to(self.device, self.dtype)
        hidden = embeds.hidden.to(self.device, self.dtype)
        if self.family == "sd3":
            tt = torch.full((n,), float(t), device=self.device, dtype=self.dtype)
            out = self.net(hidden_states=x_in, timestep=tt, encoder_hidden_states=hidden,
                           pooled_projections=embeds.pooled.to(self.device, self.dtype), return_dict=False)[0]
        else:
            kw = {}
            if self.family == "sdxl":
                h, w = x.shape[-2] * self.vae_scale, x.shape[-1] * self.vae_scale
                ids = torch.tensor([h, w, 0, 0, h, w], device=self.device, dtype=self.dtype).expand(n, 6)
                kw["added_cond_kwargs"] = {"text_embeds": embeds.pooled.to(self.device, self.dtype), "time_ids": ids}
            if self.family == "lcm":
                w = torch.full((n,), self.embedded_guidance - 1.0)
                kw["timestep_cond"] = guidance_embedding(w, self.net.config.time_cond_proj_dim).to(self.device, self.dtype)
            tt = torch.full((n,), int(round(float(t))), device=self.device, dtype=torch.long)
            out = self.net(x_in, tt, encoder_hidden_states=hidden, return_dict=False, **kw)[0]
        out = out.to(x.device, self.work_dtype)
        if not torch.isfinite(out).all():
            hint = ("half precision overflowed: run it in float32 (--dtype float32)" if self.dtype in (torch.float16, torch.bfloat16)
                    else "the input diverged or the weights are broken")
            raise InversaError(f"model {self.name} produced NaN/inf at t={float(t):g}: {hint}")
        return out


def _absent_components(folder: str) -> dict:
    """Components a saved folder lists as null (e.g. SD3 without T5) must be passed as None."""
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        return {}
    with open(index) as f:
        spec = json.load(f)
    return {k: None for k, v in spec.items() if isinstance(v, list) and v[0] is None}


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def load_model(name_or_path: str, dtype: str | torch.dtype = "float32", device: str | None = None,
               embedded_guidance: float | None = None) -> DiffusersModel:
    """Load any supported diffusers pipeline with ``from_pretrained`` (hub id or local folder)."""
    from diffusers import DiffusionPipeline

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InversaError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    local = os.path.isdir(name_or_path)
    if not local and (os.path.sep in name_or_path.strip("/") and os.path.exists(os.path.dirname(name_or_path))
                      or name_or_path.startswith((".", "/"))):
        raise InversaError(f"model folder {name_or_path} does not exist")
    try:
        pipe = DiffusionPipeline.from_pretrained(name_or_path, dtype=dtype, local_files_only=local,
                                                 **_absent_components(name_or_path))
    except InversaError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InversaError(f"cannot load model {name_or_path!r}: {first}") from exc
    if device:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return DiffusersModel(pipe, name=name_or_path, embedded_guidance=embedded_guidance)
