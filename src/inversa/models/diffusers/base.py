"""What every diffusers family shares: components, VAE, prompt encoding through the pipeline, the network call.

A family subclass overrides a few hooks, the way k-diffusion's wrappers override one
method: :meth:`accepts` (is this pipeline mine), :meth:`encode_prompt`, :meth:`noise_levels`
(may depend on the latent shape), :meth:`schedule_from_timesteps`, :meth:`network` (sees
(B, C, H, W) latents; a family that packs latents into tokens does so inside it) and
:attr:`latent_multiple`.
"""
from __future__ import annotations

import contextlib
import inspect

import torch
from torch import Tensor

from inversa.core.errors import InversaError
from inversa.core.types import Embeds
from inversa.models.model import Model

SUPPORTED = ("StableDiffusion 1.x/2.x, StableDiffusionXL (incl. Turbo), LatentConsistencyModel, StableDiffusion3, FLUX.1"
             ", SANA, PixArt-Sigma, HunyuanDiT, HiDream-I1, Wan 2.1/2.2, CogVideoX")


OVERFLOW_HINTS = {torch.float16: "float16 overflowed: use --dtype bfloat16 (float32's range) or float32",
                  torch.bfloat16: "bfloat16 lost too much precision: use --dtype float32"}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def accepts_argument(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class DiffusersModel(Model):
    """A diffusers pipeline seen through :class:`Model`.

    ``DiffusersModel(pipe)`` builds the adapter of ``pipe``'s family: the loader
    (:mod:`inversa.models.diffusers.loader`) registers its ``family_of`` here as :attr:`family_of`;
    :func:`~inversa.models.diffusers.loader.from_pipeline` does the same without the class call.
    """

    family_of = None  # pipe -> family class; set by inversa.models.diffusers.loader

    def __new__(cls, pipe, *args, **kwargs):
        if cls is DiffusersModel and DiffusersModel.family_of is not None:
            cls = DiffusersModel.family_of(pipe)
        return super().__new__(cls)

    def __init__(self, pipe, name: str = "", embedded_guidance: float | None = None):
        self.pipe = pipe
        self.name = name or getattr(pipe, "name_or_path", "") or type(pipe).__name__
        self.net = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        for part in pipe.components.values():
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False)
        self.vae = getattr(pipe, "vae", None)
        self.scheduler = pipe.scheduler
        self.embedded_guidance = (float(embedded_guidance) if embedded_guidance is not None
                                  else self.default_embedded_guidance)
        self.device = self.net.device
        self.dtype = self.net.dtype
        # latents and outputs stay float32, or float64 for a float64 model (exactness tests)
        self.work_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        vae_cfg = self.vae.config if self.vae is not None else {}
        channels = vae_cfg.get("block_out_channels") or vae_cfg.get("encoder_block_out_channels")  # DC-AE: per side
        # video pipelines name their spatial factor; image VAEs halve once per block
        self.vae_scale = getattr(pipe, "vae_scale_factor_spatial", None) or (2 ** (len(channels) - 1) if channels else 1)
        self.nfe = 0

    @classmethod
    def accepts(cls, pipe) -> bool:
        """Whether ``pipe`` belongs to this family (checked most specific family first)."""
        raise NotImplementedError

    # images ---------------------------------------------------------------
    @property
    def latent_multiple(self) -> int:
        """Latent sides must be multiples of this: the transformer's (spatial) patch size; a UNet family gives
        its downsampling, a packing one its packing."""
        patch = self.net.config.patch_size
        return int(patch[-1] if isinstance(patch, (list, tuple)) else patch)

    @property
    def latent_channels(self) -> int | None:
        """Channels of the latents the methods see (a family that patchifies them says so)."""
        cfg = self.vae.config if self.vae is not None else {}
        return cfg.get("latent_channels") or cfg.get("z_dim")

    def check_size(self, height: int, width: int) -> None:
        k = self.vae_scale * self.latent_multiple
        if height % k or width % k or height < k or width < k:
            raise InversaError(f"image size {width}x{height} does not fit model {self.name}: "
                               f"both sides must be positive multiples of {k} (use --size)")

    def default_size(self) -> int:
        """The pipeline's default height: its ``default_sample_size`` latents, else the network's sample size."""
        size = getattr(self.pipe, "default_sample_size", None) or self.net.config.sample_size
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
    def pipeline_prompt(self, prompts: list[str]) -> tuple:
        """The pipeline's own ``encode_prompt`` output for ``prompts`` (no CFG, secondary prompts unset)."""
        fn = self.pipe.encode_prompt
        kw = dict(prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        for extra in ("prompt_2", "prompt_3"):
            if accepts_argument(fn, extra):
                kw[extra] = None
        with torch.no_grad():
            return fn(**kw)

    def encode_prompt(self, prompts: list[str]) -> Embeds:
        return Embeds(self.pipeline_prompt(prompts)[0].float())

    # schedule and the stock pipeline --------------------------------------
    stock_sampler = ""  # the diffusers scheduler class whose deterministic steps inversa's sampler equals
    default_embedded_guidance: float | None = None  # the guidance a family feeds its network as an input
    stock_label = "diffusers"  # the family's pipeline, as error messages name it
    stock_without_cfg = ""  # why the family's stock pipeline runs no unconditional branch (empty: it runs one)
    stock_callback_refusal = ""  # why stock_callback cannot drive the family's pipeline (empty: it can)
    embeddings_unreplayable = ""  # why per-step embeddings (null text, prompt tuning) cannot replay in the pipeline
    packs_latents = False  # the pipeline takes packed tokens as latents: no callback replay at all

    def stock_guidance(self, guidance: float) -> float:
        """The ``guidance_scale`` a stock call replaying an inversion made at ``guidance`` takes."""
        return guidance

    def stock_scheduler(self, spacing: str | None = None):
        """The scheduler users sample with; ``spacing`` overrides ``timestep_spacing`` where a family has one."""
        return self.scheduler_from_config()

    def scheduler_from_config(self, **overrides):
        """A fresh :attr:`stock_sampler` built from the pipeline's scheduler config."""
        import diffusers

        cls = getattr(diffusers, self.stock_sampler)
        known = inspect.signature(cls.__init__).parameters  # other schedulers' keys would only warn
        return cls.from_config({**{k: v for k, v in self.scheduler.config.items() if k in known}, **overrides})

    def train_steps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # network --------------------------------------------------------------
    def network(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        """The raw network output for ``x`` (B, C, H, W) on the model's device and dtype."""
        raise NotImplementedError

    def forward(self, x: Tensor, t: float, embeds: Embeds) -> Tensor:
        self.nfe += x.shape[0]
        with _full_float32(self.dtype):
            out = self.network(x.to(self.device, self.dtype), t, embeds).to(x.device, self.work_dtype)
        if not torch.isfinite(out).all():
            raise InversaError(f"model {self.name} produced NaN/inf at t={float(t):g} in {_name(self.dtype)}: "
                               f"{OVERFLOW_HINTS.get(self.dtype, 'the input diverged or the weights are broken')}")
        return out

    def on_device(self, tensor: Tensor) -> Tensor:
        return tensor.to(self.device, self.dtype)


@contextlib.contextmanager
def _full_float32(dtype: torch.dtype):
    """A float32 network computes in float32 on CUDA too: no TF32 convolutions or matmuls (on by default for
    cuDNN convolutions, they cost a float32 UNet 3 of its 7 digits: the exact methods' latent MSE rose from
    2.5e-13 to 2.6e-7 and finite-difference Newton's tenfold on an H200). Half precision is the
    fast path."""
    if dtype not in (torch.float32, torch.float64) or not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
