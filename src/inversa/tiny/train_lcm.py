"""``inversa train-tiny --recipe lcm``: latent consistency distillation of the embedded model.

Luo et al. 2023 (LCM), Algorithm 1, on the shipped v-prediction UNet as teacher:
the student is the teacher's UNet plus LCM's guidance-scale input (``time_cond_proj_dim``,
zero-initialised so step 0 is the teacher); for a latent noised to ``t_{n+k}`` on the
50-step skipping grid (k = 20 training steps), the teacher's guided DDIM step to ``t_n``
gives ``x_n``; the loss pulls the student's consistency function ``f(x_{n+k}, t_{n+k})``
towards the EMA target's ``f(x_n, t_n)`` (pseudo-Huber, c = 0.001).

| code | paper |
|---|---|
| ``w`` | guidance scale ω (CFG ``x0 = x0_c + w (x0_c - x0_u)``; the pipeline's guidance_scale is w + 1) |
| ``c_skip``, ``c_out`` | boundary-condition scalings, sigma_data 0.5, timestep scaling 10 (as LCMScheduler) |
| ``target`` | EMA target network θ⁻ (decay 0.95) |

The result is a ``LatentConsistencyModelPipeline`` folder (LCMScheduler) sharing the teacher's VAE,
text encoder and tokenizer; the UNet is stored in float16 to keep the shipped package small.
"""
from __future__ import annotations

import os

import torch

from inversa.tiny.loop import cached_latents, fit, sample_latents, write_info
from inversa.tiny.train import MAX_TOKENS

GRID = 50  # LCMScheduler's original_inference_steps: the teacher's skipping-step grid
COND_DIM = 256  # guidance embedding width, as LCM-SD1.5
W_RANGE = (1.0, 4.0)  # sampled guidance w (pipeline guidance_scale 2-5)


def boundary(t: torch.Tensor, sigma_data: float = 0.5, scaling: float = 10.0):
    """LCM's (c_skip, c_out) at integer timesteps ``t``: c_skip(0) = 1, c_out(0) = 0."""
    s = (t.float() * scaling) ** 2
    return (sigma_data ** 2 / (s + sigma_data ** 2)).view(-1, 1, 1, 1), \
        (t.float() * scaling / (s + sigma_data ** 2).sqrt()).view(-1, 1, 1, 1)


def x0_eps(v: torch.Tensor, x: torch.Tensor, a: torch.Tensor):
    """(x0, eps) from a v-prediction at ``x`` with alpha-bar ``a``."""
    return a.sqrt() * x - (1 - a).sqrt() * v, a.sqrt() * v + (1 - a).sqrt() * x


def student_from(teacher_unet):
    """The teacher's UNet with a zero-initialised guidance-scale input (LCM's ``time_cond_proj_dim``)."""
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config({**teacher_unet.config, "time_cond_proj_dim": COND_DIM})
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    assert not unexpected and all("cond_proj" in k for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


def distillation_loss(student, teacher, text, ids_all, empty, latents, alphas, batch: int, scale: float):
    """The per-step loss closure for :func:`inversa.tiny.loop.fit`."""
    from inversa.core.embedding import guidance_embedding

    skip = len(alphas) // GRID

    def loss_fn(step, g, ema):
        z0, idx = sample_latents(latents, batch, scale, g)
        t = (torch.randint(0, GRID, (batch,), generator=g) + 1) * skip - 1
        s = (t - skip).clamp(min=0)
        noise = torch.randn(z0.shape, generator=g)
        w = W_RANGE[0] + (W_RANGE[1] - W_RANGE[0]) * torch.rand(batch, generator=g)
        a_t, a_s = alphas[t].view(-1, 1, 1, 1), alphas[s].view(-1, 1, 1, 1)
        x_t = a_t.sqrt() * z0 + (1 - a_t).sqrt() * noise
        wv, cond = w.view(-1, 1, 1, 1), guidance_embedding(w, COND_DIM)
        with torch.no_grad():
            hid = text(torch.cat([ids_all[idx], empty.expand(batch, -1)]))[0]
            v = teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=hid).sample
            (x0_c, x0_u), (e_c, e_u) = (p.chunk(2) for p in x0_eps(v, torch.cat([x_t, x_t]), torch.cat([a_t, a_t])))
            x0, eps = x0_c + wv * (x0_c - x0_u), e_c + wv * (e_c - e_u)
            x_s = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps  # the teacher's guided DDIM step t -> s
            skip_s, out_s = boundary(s)
            x0_tgt = x0_eps(ema(x_s, s, encoder_hidden_states=hid[:batch], timestep_cond=cond).sample, x_s, a_s)[0]
            tgt = skip_s * x_s + out_s * x0_tgt
        skip_t, out_t = boundary(t)
        x0_st = x0_eps(student(x_t, t, encoder_hidden_states=hid[:batch], timestep_cond=cond).sample, x_t, a_t)[0]
        pred = skip_t * x_t + out_t * x0_st
        return (((pred - tgt) ** 2 + 1e-6).sqrt() - 1e-3).mean()

    return loss_fn


def train(output: str, teacher: str | None = None, steps: int = 4000, minutes: float | None = None,
          batch_size: int = 16, dataset_size: int = 6000, seed: int = 0, every: int = 50, resume: bool = False,
          progress: bool = True, lr: float = 1e-4, command: str | None = None) -> str:
    """Distil ``teacher`` (default: the embedded model) into an LCM pipeline saved in ``output``."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline

    from inversa.tiny import default_model_path

    os.makedirs(output, exist_ok=True)
    teacher = teacher or default_model_path()
    pipe = StableDiffusionPipeline.from_pretrained(teacher, local_files_only=True)
    for m in (pipe.unet, pipe.text_encoder, pipe.vae):
        m.eval().requires_grad_(False)
    scale = pipe.vae.config.scaling_factor
    latents = cached_latents(pipe.vae, dataset_size, seed, output)
    ids_all = pipe.tokenizer(list(latents[2]) + [""], padding="max_length", max_length=MAX_TOKENS, truncation=True,
                             return_tensors="pt").input_ids
    torch.manual_seed(seed)
    student = student_from(pipe.unet)
    loss_fn = distillation_loss(student, pipe.unet, pipe.text_encoder, ids_all[:-1], ids_all[-1:], latents,
                                pipe.scheduler.alphas_cumprod.float(), batch_size, scale)
    summary, ema = fit(student, loss_fn, output, "lcm", steps, minutes, seed, lr, 0.95, every, resume, progress,
                       warmup=20)
    sched = LCMScheduler.from_config(pipe.scheduler.config, original_inference_steps=GRID, timestep_scaling=10.0)
    lcm = LatentConsistencyModelPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                         unet=ema.half(), scheduler=sched, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    lcm.save_pretrained(output)
    write_info(output, resume, command, dict(recipe="lcm", teacher=teacher, seed=seed, batch_size=batch_size,
                                              dataset_size=dataset_size, lr=lr, w_range=W_RANGE, grid=GRID,
                                              lcm=summary, torch_threads=torch.get_num_threads()))
    return output

