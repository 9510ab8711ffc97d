"""The resumable training loop the sibling recipes share (``--recipe lcm`` and ``--recipe flow``).

One AdamW over the trained module, an EMA copy of it, a step budget and a wall-time budget
that survive resumes, checkpoints as safetensors (``checkpoint.save``), losses appended to
``OUTPUT/losses.csv`` as the base recipe writes them (so ``eval_tiny --run`` draws the curve).
"""
from __future__ import annotations

import copy
import json
import os
import time
from typing import Callable

import numpy as np
import torch

from inversa.io.outputs import write_text
from inversa.tiny import checkpoint
from inversa.tiny.train import budget_spent, encode_dataset, log_progress, optimise_step


def cached_latents(vae, n: int, seed: int, output: str, device: str = "cpu"):
    """``encode_dataset`` once per run folder: (mean, std, captions) kept in ``latents.safetensors``."""
    path = os.path.join(output, "latents.safetensors")
    if os.path.exists(path):
        st = checkpoint.load(path)
        if st["n"] == n and st["seed"] == seed:
            return st["mean"], st["std"], st["captions"]
    mean, std, captions = encode_dataset(vae, n, seed, device)
    checkpoint.save(path, dict(mean=mean, std=std, captions=captions, n=n, seed=seed))
    return mean, std, captions


def sample_latents(latents, batch: int, scale: float, g: torch.Generator):
    """A batch of scaled latents drawn from the cached posteriors, with their dataset indices."""
    mean, std = latents[0], latents[1]
    idx = torch.randint(0, mean.shape[0], (batch,), generator=g)
    return (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale, idx


def _resume(ckpt: str, model, ema, opt, loss_v: float) -> tuple[int, float, float]:
    """(step, seconds spent, last loss) of the checkpoint loaded into the models, or a fresh start without one."""
    if not os.path.exists(ckpt):
        return 0, 0.0, loss_v
    st = checkpoint.load(ckpt)
    model.load_state_dict(st["model"]), ema.load_state_dict(st["ema"]), opt.load_state_dict(st["opt"])
    return st["step"], st["seconds"], st.get("loss", loss_v)


def fit(model: torch.nn.Module, loss_fn: Callable[[int, torch.Generator, torch.nn.Module], torch.Tensor],
        output: str, stage: str, steps: int, minutes: float | None, seed: int, lr: float, ema_decay: float,
        every: int, resume: bool, progress: bool = True, warmup: int = 100) -> tuple[dict, torch.nn.Module]:
    """Minimise ``loss_fn(step, generator, ema)`` over ``model``; returns (summary, EMA copy).

    The EMA copy is passed to ``loss_fn`` too: LCM's target network is this EMA.
    """
    from tqdm.auto import tqdm

    ckpt = os.path.join(output, f"checkpoint-{stage}.safetensors")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = copy.deepcopy(model).requires_grad_(False)
    step, spent, loss_v = 0, 0.0, float("nan")
    if not resume and os.path.exists(os.path.join(output, "losses.csv")):
        os.remove(os.path.join(output, "losses.csv"))
    if resume:
        step, spent, loss_v = _resume(ckpt, model, ema, opt, loss_v)
    model.train()
    first, start = step, time.time()
    bar = tqdm(total=steps, initial=step, desc=stage, disable=not progress)

    def save(seconds):
        checkpoint.save(ckpt, dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                                   seconds=seconds, loss=loss_v))

    while not budget_spent(step, steps, start, minutes, spent):
        g = torch.Generator().manual_seed(int(np.uint32(seed * 1_000_003 + step)))
        loss = loss_fn(step, g, ema)
        optimise_step(opt, params, loss, lr, step, warmup)
        step += 1
        with torch.no_grad():
            decay = ema_decay if ema_decay < 0.99 else min(ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p.detach(), 1 - decay)
        loss_v = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}")
        log_progress(output, stage, step, loss_v, spent + time.time() - start)
        if step % every == 0:
            save(spent + time.time() - start)
    bar.close()
    seconds = spent + time.time() - start
    if step > first:  # ``--resume --steps 0`` only exports the pipeline, leaving a running job's checkpoint alone
        save(seconds)
    ema.eval()
    return dict(steps=step, seconds=seconds, loss=loss_v), ema


def write_info(output: str, resume: bool, command: str | None, info: dict) -> None:
    """training.json with the command lines of every resume, for the model card."""
    path = os.path.join(output, "training.json")
    commands = json.load(open(path)).get("commands", []) if resume and os.path.exists(path) else []
    write_text(path, json.dumps(dict(commands=commands + ([command] if command else []), **info), indent=2))

