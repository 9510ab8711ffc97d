"""``inversa train-tiny``: train the embedded text-to-image model on CPU.

Two stages, both resumable from ``OUTPUT/checkpoint-*.safetensors`` (safetensors + JSON, never pickles):
1. a tiny AutoencoderKL (one downsampling, 64x64 -> 4x32x32) on shapes mixed with
   random crops of the photos bundled with scikit-image / scikit-learn, so it also
   reconstructs real photos;
2. a UNet2DConditionModel and a small CLIPTextModel trained jointly on cached latents
   of the shapes dataset, v-prediction by default (its loss weighs the noisy timesteps,
   where colours and layout are decided, far more than epsilon's), 10% caption dropout
   for classifier-free guidance, EMA weights.
The result is a StableDiffusionPipeline folder loadable with ``from_pretrained``.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from inversa.io.outputs import write_text
from inversa.tiny import checkpoint, shapes
from inversa.tiny.vocab import make_tokenizer

# The default UNet goes down to 4x4 latent cells, so the caption's layout words can act on the whole image
# (with the zero-SNR schedule below; alone, this depth did not make samples follow shape or position).
CONFIGS = {
    "default": dict(vae_channels=(16, 32), vae_groups=8, unet_channels=(32, 64, 96, 96), groups=32, text_hidden=64,
                    text_layers=2),
    "test": dict(vae_channels=(8, 16), vae_groups=4, unet_channels=(8, 16), groups=4, text_hidden=16, text_layers=1),
}
MAX_TOKENS = 24


def build_parts(config: str, seed: int = 0, prediction: str = "v_prediction"):
    """Fresh (vae, unet, text_encoder, tokenizer, scheduler) of the named size."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = CONFIGS[config]
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=c["vae_channels"], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=c["vae_groups"], sample_size=64, mid_block_add_attention=False)
    tok = make_tokenizer(tempfile.mkdtemp(prefix="inversa-tok-"), shapes.vocabulary(), max_length=MAX_TOKENS)
    h = c["text_hidden"]
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h,
                                        num_hidden_layers=c["text_layers"], num_attention_heads=4,
                                        max_position_embeddings=MAX_TOKENS, projection_dim=h,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, hidden_act="gelu"))
    ch = c["unet_channels"]
    attn = ("CrossAttnDownBlock2D",) * (len(ch) - 1)  # no attention at full latent resolution (cost)
    unet = UNet2DConditionModel(block_out_channels=ch, layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D",) + attn,
                                up_block_types=tuple(a.replace("Down", "Up") for a in reversed(attn)) + ("UpBlock2D",),
                                cross_attention_dim=h,
                                attention_head_dim=8, norm_num_groups=c["groups"])
    # v-prediction allows a zero terminal SNR: the noisiest training step then holds no trace of the image, so
    # layout must come from the caption (with SD's schedule the model read it from the leftover signal instead)
    zero_snr = prediction == "v_prediction"
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=0 if zero_snr else 1, prediction_type=prediction,
                          rescale_betas_zero_snr=zero_snr, timestep_spacing="trailing" if zero_snr else "leading")
    return vae, unet, text, tok, sched


# data -------------------------------------------------------------------------
def _photos() -> list[np.ndarray]:
    """Bundled real photos (no download): RGB uint8 arrays."""
    import skimage.data as d

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "camera", "coins"):
        try:
            a = getattr(d, name)()
        except Exception:  # a missing optional file must not stop training
            continue
        out.append(np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3])
    try:
        from sklearn.datasets import load_sample_images

        out += list(load_sample_images().images)
    except Exception:
        pass
    return out


def photo_crops(rng: np.random.Generator, photos: list[np.ndarray], n: int) -> torch.Tensor:
    """``n`` random square crops (random scale, flips) resized to 64x64, in [-1, 1]."""
    from PIL import Image

    out = []
    for _ in range(n):
        a = photos[rng.integers(len(photos))]
        h, w = a.shape[:2]
        side = int(rng.integers(48, min(h, w) + 1))
        top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
        crop = Image.fromarray(a[top:top + side, left:left + side]).resize((64, 64), Image.BICUBIC)
        arr = np.asarray(crop)
        if rng.integers(2):
            arr = arr[:, ::-1]
        out.append(arr)
    return _to_tensor(np.stack(out))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


# checkpoints --------------------------------------------------------------------
def log_progress(output: str, stage: str, step: int, loss: float, seconds: float) -> None:
    with open(os.path.join(output, "losses.csv"), "a") as f:
        f.write(f"{stage},{step},{loss:.6f},{seconds:.1f}\n")


def budget_spent(step: int, steps: int, start: float, minutes: float | None, spent: float) -> bool:
    return step >= steps or (minutes is not None and spent + time.time() - start >= minutes * 60)


def train_vae(vae, output: str, steps: int, minutes: float | None, batch: int, seed: int, device: str,
              every: int, resume: bool, progress: bool = True, log_every: int = 1) -> dict:
    """Reconstruction (L1 + MSE) + tiny KL on half shapes, half photo crops."""
    from tqdm.auto import tqdm

    ckpt = os.path.join(output, "checkpoint-vae.safetensors")
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    step, spent = 0, 0.0
    if resume and os.path.exists(ckpt):
        st = checkpoint.load(ckpt)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        step, spent = st["step"], st["seconds"]
        if st.get("done"):
            return dict(steps=step, seconds=spent, loss=float("nan"))
    vae.to(device).train()
    photos = _photos()
    start = time.time()
    bar = tqdm(total=steps, initial=step, desc="vae", disable=not progress)
    loss_v = float("nan")
    while not budget_spent(step, steps, start, minutes, spent):
        rng = np.random.default_rng([seed, 7, step])
        half = batch // 2
        imgs = [s.image for s in (shapes.sample(seed + 1000, int(rng.integers(1 << 30))) for _ in range(batch - half))]
        x = torch.cat([_to_tensor(np.stack(imgs)), photo_crops(rng, photos, half)]).to(device)
        dist = vae.encode(x).latent_dist
        rec = vae.decode(dist.sample()).sample
        kl = dist.kl().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_v = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}")
        if step % log_every == 0:
            log_progress(output, "vae", step, loss_v, spent + time.time() - start)
        if step % every == 0:
            checkpoint.save(ckpt, dict(model=vae.state_dict(), opt=opt.state_dict(), step=step,
                                  seconds=spent + time.time() - start))
    bar.close()
    seconds = spent + time.time() - start
    checkpoint.save(ckpt, dict(model=vae.state_dict(), opt=opt.state_dict(), step=step, seconds=seconds, done=True))
    vae.eval()
    return dict(steps=step, seconds=seconds, loss=loss_v)


@torch.no_grad()
def encode_dataset(vae, n: int, seed: int, device: str, batch: int = 64):
    """Latent mean and std of ``n`` training shapes, with their captions."""
    means, stds, captions = [], [], []
    for start in range(0, n, batch):
        items = shapes.dataset(min(batch, n - start), seed, "train", start)
        dist = vae.encode(_to_tensor(np.stack([s.image for s in items])).to(device)).latent_dist
        means.append(dist.mean.cpu()), stds.append(dist.std.cpu())
        captions += [s.caption for s in items]
    return torch.cat(means), torch.cat(stds), captions


def _unet_batch(latents, ids_all, empty, alphas, batch: int, dropout: float, seed: int, step: int, device: str,
                v_prediction: bool):
    """Step ``step``'s (noisy latents, timesteps, caption ids, target), drawn from its own seeded generator."""
    mean, std, _, scale = latents
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, mean.shape[0], (batch,), generator=g)
    z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
    ids = ids_all[idx].clone()
    ids[torch.rand(batch, generator=g) < dropout] = empty
    t = torch.randint(0, len(alphas), (batch,), generator=g)
    noise = torch.randn(z.shape, generator=g)
    z, t, noise, ids = z.to(device), t.to(device), noise.to(device), ids.to(device)
    a = alphas[t].view(-1, 1, 1, 1)
    x = a.sqrt() * z + (1 - a).sqrt() * noise
    return x, t, ids, a.sqrt() * noise - (1 - a).sqrt() * z if v_prediction else noise


def _unet_state(unet, text, opt, ema, step: int, seconds: float, done: bool = False) -> dict:
    return dict(unet=unet.state_dict(), text=text.state_dict(), opt=opt.state_dict(),
                ema_unet=ema["unet"].state_dict(), ema_text=ema["text"].state_dict(), step=step,
                seconds=seconds, done=done)


def _resume_unet(ckpt: str, unet, text, opt, ema, steps: int, minutes: float | None) -> tuple[int, float]:
    """(step, seconds spent) of the checkpoint loaded into the models, or (0, 0) without one."""
    if not os.path.exists(ckpt):
        return 0, 0.0
    st = checkpoint.load(ckpt)
    unet.load_state_dict(st["unet"]), text.load_state_dict(st["text"]), opt.load_state_dict(st["opt"])
    ema["unet"].load_state_dict(st["ema_unet"]), ema["text"].load_state_dict(st["ema_text"])
    step, spent = st["step"], st["seconds"]
    if st.get("done") and step >= steps:
        spent = float("inf") if minutes is not None else spent
    return step, spent


def optimise_step(opt, params, loss, lr: float, step: int, warmup: int = 100) -> None:
    """One AdamW step with a linear warm-up over ``warmup`` steps and gradients clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, (step + 1) / warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _ema_update(ema: dict, live: dict, step: int) -> None:
    decay = min(0.998, (1 + step) / (10 + step))
    with torch.no_grad():
        for key, model in live.items():
            for pe, p in zip(ema[key].parameters(), model.parameters()):
                pe.lerp_(p.detach(), 1 - decay)


def train_unet(unet, text, tok, sched, latents, output: str, steps: int, minutes: float | None, batch: int,
               seed: int, device: str, every: int, resume: bool, progress: bool = True, log_every: int = 1,
               lr: float = 6e-4, dropout: float = 0.1) -> dict:
    """Denoising loss on the scheduler's prediction type; captions dropped to '' with probability ``dropout`` (CFG)."""
    import copy

    from tqdm.auto import tqdm

    ckpt = os.path.join(output, "checkpoint-unet.safetensors")
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = {"unet": copy.deepcopy(unet).requires_grad_(False), "text": copy.deepcopy(text).requires_grad_(False)}
    step, spent = _resume_unet(ckpt, unet, text, opt, ema, steps, minutes) if resume else (0, 0.0)
    for m in (unet, text, ema["unet"], ema["text"]):
        m.to(device)
    unet.train(), text.train()
    ids_all = tok(latents[2] + [""], padding="max_length", max_length=MAX_TOKENS, truncation=True,
                  return_tensors="pt").input_ids
    alphas = sched.alphas_cumprod.to(device)
    v_prediction = sched.config.prediction_type == "v_prediction"
    start = time.time()
    bar = tqdm(total=steps, initial=step, desc="unet", disable=not progress)
    loss_v = float("nan")
    while not budget_spent(step, steps, start, minutes, spent):
        x, t, ids, target = _unet_batch(latents, ids_all, ids_all[-1], alphas, batch, dropout, seed, step, device,
                                        v_prediction)
        loss = F.mse_loss(unet(x, t, encoder_hidden_states=text(ids)[0]).sample, target)
        optimise_step(opt, params, loss, lr, step)
        step += 1
        _ema_update(ema, {"unet": unet, "text": text}, step)
        loss_v = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}")
        if step % log_every == 0:
            log_progress(output, "unet", step, loss_v, spent + time.time() - start)
        if step % every == 0:
            checkpoint.save(ckpt, _unet_state(unet, text, opt, ema, step, spent + time.time() - start))
    bar.close()
    seconds = spent + time.time() - start
    checkpoint.save(ckpt, _unet_state(unet, text, opt, ema, step, seconds, done=True))
    unet.load_state_dict(ema["unet"].state_dict()), text.load_state_dict(ema["text"].state_dict())
    unet.eval(), text.eval()
    return dict(steps=step, seconds=seconds, loss=loss_v)


def train(output: str, steps: int = 4000, minutes: float | None = None, vae_steps: int = 600,
          vae_minutes: float | None = None, batch_size: int = 32, vae_batch_size: int = 8, seed: int = 0, device: str = "cpu",
          dataset_size: int = 6000, config: str = "default", every: int = 100, resume: bool = False,
          progress: bool = True, prediction: str = "v_prediction", command: str | None = None) -> str:
    """Train both stages into ``output`` and save the pipeline there; returns ``output``.

    ``command`` (the command line) is appended to the ``commands`` kept in training.json
    across resumes, for the model card.
    """
    from diffusers import StableDiffusionPipeline

    os.makedirs(output, exist_ok=True)
    if resume:
        checkpoint.refuse_pickles(output)
    if not resume and os.path.exists(os.path.join(output, "losses.csv")):
        os.remove(os.path.join(output, "losses.csv"))
    vae, unet, text, tok, sched = build_parts(config, seed, prediction)
    v = train_vae(vae, output, vae_steps, vae_minutes, vae_batch_size, seed, device, every, resume, progress)
    vae.requires_grad_(False)
    mean, std, captions = encode_dataset(vae, dataset_size, seed, device)
    scale = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scale)
    u = train_unet(unet, text, tok, sched, (mean, std, captions, scale), output, steps, minutes, batch_size, seed,
                   device, every, resume, progress)
    pipe = StableDiffusionPipeline(vae=vae.cpu(), text_encoder=text.cpu(), tokenizer=tok, unet=unet.cpu(),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(output)
    info_path = os.path.join(output, "training.json")
    commands = json.load(open(info_path)).get("commands", []) if resume and os.path.exists(info_path) else []
    info = dict(commands=commands + ([command] if command else []), config=config, prediction=prediction, seed=seed, batch_size=batch_size, dataset_size=dataset_size, scaling_factor=scale,
                vae=v, unet=u, device=device, torch_threads=torch.get_num_threads())
    write_text(info_path, json.dumps(info, indent=2))
    return output


