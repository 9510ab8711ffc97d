"""``inversa train-tiny``: the embedded model and its LCM and flow siblings (:mod:`inversa.tiny.train`)."""
from __future__ import annotations

import json
import os

import torch

from inversa.tiny.train import CONFIGS, train


def run(args) -> int:
    from inversa.core.errors import InversaError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config not in CONFIGS:
        raise InversaError(f"unknown --config {args.config!r}; expected one of {', '.join(CONFIGS)}")
    if args.recipe != "base":
        return run_sibling(args)
    out = train(args.output, steps=args.steps, minutes=args.minutes, vae_steps=args.vae_steps,
                vae_minutes=args.vae_minutes, batch_size=args.batch_size or 32, vae_batch_size=args.vae_batch_size, seed=args.seed, device=args.device or "cpu",
                dataset_size=args.dataset_size, config=args.config, every=args.checkpoint_every, resume=args.resume,
                progress=not args.no_progress, prediction=args.prediction,
                command=getattr(args, "command_line", None))
    with open(os.path.join(out, "training.json")) as f:
        info = json.load(f)
    print(f"trained vae {info['vae']['steps']} steps ({info['vae']['seconds'] / 60:.1f} min), unet "
          f"{info['unet']['steps']} steps ({info['unet']['seconds'] / 60:.1f} min, loss {info['unet']['loss']:.4f}) "
          f"-> {out}")
    return 0


def run_sibling(args) -> int:
    """``--recipe lcm`` / ``--recipe flow``: a sibling trained from the embedded model (or ``--base``)."""
    from inversa.tiny import train_flow, train_lcm

    common = dict(steps=args.steps, minutes=args.minutes, dataset_size=args.dataset_size, seed=args.seed,
                  every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress,
                  command=getattr(args, "command_line", None))
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if args.recipe == "lcm":
        out = train_lcm.train(args.output, teacher=args.base, **common)
    else:
        out = train_flow.train(args.output, base=args.base, config=args.config, **common)
    with open(os.path.join(out, "training.json")) as f:
        info = json.load(f)[args.recipe]
    print(f"trained {args.recipe} {info['steps']} steps ({info['seconds'] / 60:.1f} min, loss {info['loss']:.4f}) -> {out}")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("train-tiny", help="train the small embedded text-to-image model (CPU is enough)")
    p.add_argument("--recipe", default="base", choices=["base", "lcm", "flow"],
                   help="base: the embedded model from scratch; lcm: its latent-consistency distillation; "
                        "flow: a tiny SD3 transformer on its VAE and text encoder")
    p.add_argument("--base", default=None, help="lcm/flow: the model distilled or reused (default: the embedded one)")
    p.add_argument("--output", "-o", default="runs/tiny", help="output folder (checkpoints + final pipeline)")
    p.add_argument("--steps", type=int, default=4000, help="UNet training steps")
    p.add_argument("--minutes", type=float, default=None, help="UNet wall-time budget; stops at steps or minutes")
    p.add_argument("--vae-steps", type=int, default=600, help="VAE training steps")
    p.add_argument("--vae-minutes", type=float, default=None, help="VAE wall-time budget")
    p.add_argument("--batch-size", type=int, default=None, help="UNet batch (default 32; lcm and flow 16)")
    p.add_argument("--vae-batch-size", type=int, default=8, help="VAE batch (half shapes, half photo crops)")
    p.add_argument("--dataset-size", type=int, default=6000, help="shapes images encoded for the UNet stage")
    p.add_argument("--config", default="default", help="model size: default | test (minuscule, for tests)")
    p.add_argument("--prediction", default="v_prediction", choices=["v_prediction", "epsilon"],
                   help="what the UNet predicts (v weighs the noisy, layout-deciding steps more)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint-*.safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu (default), cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
