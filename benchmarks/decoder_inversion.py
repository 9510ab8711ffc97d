"""Decoder inversion: which optimiser, what it costs, and whether the fitted latent stays invertible.

Part 1: PSNR of D(z) against the image versus wall time for Adam (lr 0.05, the issue's quick
measurement) and inversa's batched L-BFGS, both on ``||D(z) - x||^2 + reg ||z - E(x)||^2``
from ``E(x)``, over the builtin photos with the embedded model (one batch).
Part 2: invertibility of the fitted latent: latent MSE of fixed_point and preciseinv on ``E(x)``
and on the fitted ``z`` (4 and 10 steps). Writes Markdown and a plot. Not a test. Example:

    PYTHONPATH=src python benchmarks/decoder_inversion.py --threads 2 --out benchmarks/decoder_inversion/results
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import inversa
from inversa.bench.datasets import photos
from inversa.core.metrics import latent_mse, psnr
from inversa.methods import get_method
from inversa.models.decoder import invert_decoder
from inversa.tiny import default_model_path


def adam(model, images, z0, iters: int, lr: float, reg: float):
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(iters):
        with torch.enable_grad():
            loss = ((model.decode(z, grad=True) - images).flatten(1).pow(2).mean(1)
                    + reg * (z - z0).flatten(1).pow(2).mean(1)).sum()
            opt.zero_grad()
            loss.backward()
        opt.step()
    return z.detach()


def curves(model, images, z0, reg: float) -> list[dict]:
    with torch.no_grad():
        base = psnr(images, model.decode(z0))
    rows = []
    runs = [("adam", it, lambda it=it: adam(model, images, z0, it, 0.05, reg)) for it in (25, 50, 100, 200)]
    runs += [("lbfgs", it, lambda it=it: invert_decoder(model, images, z0, iters=it, reg=reg, tol=0.0).z)
             for it in (10, 25, 50, 100)]
    for name, iters, fn in runs:
        start = time.perf_counter()
        z = fn()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            gain = psnr(images, model.decode(z)) - base
        rows.append({"optimiser": name, "iters": iters, "seconds": seconds, "gain": float(gain.mean()),
                     "min_gain": float(gain.min()), "z_std": float(z.std()), "psnr": float((base + gain).mean())})
        print(f"{name} {iters}: +{rows[-1]['gain']:.2f} dB in {seconds:.1f} s", flush=True)
    return rows


def invertibility(model, z0, z, steps_list=(4, 10)) -> list[dict]:
    rows = []
    for steps in steps_list:
        cond, sched = model.condition([""] * len(z0)), model.schedule(steps)
        for method in ("fixed_point", "preciseinv"):
            for label, latent in (("E(x)", z0), ("fitted z", z)):
                trace = get_method(method).invert(model, latent, cond, sched)
                with torch.no_grad():
                    z_hat = inversa.core.replay.denoise(model, trace.x_T, sched, cond, trace.state)
                err = latent_mse(latent, z_hat)
                rows.append({"steps": steps, "method": method, "latent": label, "mean": float(err.mean()),
                             "max": float(err.max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reg", type=float, default=1e-3)
    ap.add_argument("--out", default="benchmarks/decoder_inversion/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = inversa.load_model(default_model_path())
    images = torch.cat([item.load(64) for item in photos().items])
    z0 = model.encode(images)
    rows = curves(model, images, z0, args.reg)
    z = invert_decoder(model, images, z0, reg=args.reg).z
    inv_rows = invertibility(model, z0, z)
    lines = [f"# Decoder inversion on the embedded model ({len(images)} builtin photos, 64 px, one batch, "
             f"reg {args.reg:g}, float32, {args.threads} CPU threads)", "",
             "| optimiser | iterations | seconds (batch) | PSNR of D(z) (dB) | gain over D(E(x)) (dB) | min gain | std of z |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['optimiser']} | {r['iters']} | {r['seconds']:.1f} | {r['psnr']:.2f} | +{r['gain']:.2f} | "
              f"+{r['min_gain']:.2f} | {r['z_std']:.3f} |" for r in rows]
    lines += ["", f"std of E(x): {float(z0.std()):.3f}. Adam: lr 0.05. L-BFGS: inversa.models.decoder (history 10, Armijo).", "",
              "## Is the fitted latent as invertible as E(x)? (latent MSE of the sampler's regeneration, default options)", "",
              "| steps | method | latent | mean latent MSE | max |", "|---|---|---|---|---|"]
    lines += [f"| {r['steps']} | {r['method']} | {r['latent']} | {r['mean']:.2e} | {r['max']:.2e} |" for r in inv_rows]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # one folder per benchmark
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in ("adam", "lbfgs"):
        pts = [r for r in rows if r["optimiser"] == name]
        ax.plot([r["seconds"] for r in pts], [r["gain"] for r in pts], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("seconds for the batch")
    ax.set_ylabel("PSNR gain over the VAE round trip (dB)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
