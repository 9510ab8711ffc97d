"""Benchmark ddim, fixed_point, preciseinv (paper solver and ours) and polaris on the same latents.

Prints one Markdown table and writes JSON. Sources: the Gaussian oracle (error against
the exact inversion) and tiny random SD / LCM / SD3 pipelines (a bundled photo through
the VAE, or a latent the pipeline generates itself). Not a test: figures depend on the
machine. Example:

    PYTHONPATH=src python benchmarks/precise_bench.py --families oracle,sd --steps 2,4,10 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from inversa.core import metrics
from inversa.core.replay import denoise
from inversa.methods import get_method
from inversa.models.oracle import GaussianModel


def photo_latent(model):
    import numpy as np
    from PIL import Image
    from skimage import data

    img = np.array(Image.fromarray(data.astronaut()).resize((64, 64)))
    x = torch.tensor(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    return model.encode(x)


def generated_latent(model, sched, cond, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return denoise(model, torch.randn(1, 4, 32, 32, generator=g), sched, cond)


def configs(args):
    out = [("ddim", "ddim", {}, 1.0),
           ("fixed_point", "fixed_point", {"iters": 10}, 1.0),
           ("preciseinv[paper]", "preciseinv", {"solver": "paper", "eta": args.paper_eta, "max_iters": args.paper_iters}, 1.0),
           ("preciseinv[newton]", "preciseinv", {"solver": "newton", "eta": args.eta}, 1.0),
           ("preciseinv[anderson]", "preciseinv", {"solver": "anderson", "eta": args.eta}, 1.0),
           (f"ddim cfg{args.guidance}", "ddim", {}, args.guidance),
           (f"polaris cfg{args.guidance}", "polaris", {}, args.guidance),
           (f"polaris+fp cfg{args.guidance}", "polaris", {"base": "fixed_point", "iters": 10}, args.guidance)]
    return [c for c in out if args.methods == "all" or c[0].split("[")[0].split(" ")[0] in args.methods.split(",")]


def run_one(model, z0, steps, label, method, cfg, guidance, exact_fn=None, prompt=""):
    cond = model.condition([prompt] * z0.shape[0], guidance)
    sched = model.schedule(steps)
    model.nfe = 0
    start = time.perf_counter()
    trace = get_method(method).invert(model, z0, cond, sched, **cfg)
    seconds = time.perf_counter() - start
    nfe = model.nfe / z0.shape[0]
    with torch.no_grad():
        z = denoise(model, trace.x_T, sched, cond, trace.state)
    row = {"method": label, "steps": steps, "guidance": guidance, "config": cfg, "seconds": seconds, "nfe": nfe,
           "iters": sum(max(s["iters"]) if isinstance(s.get("iters"), list) else s.get("iters", 1) for s in trace.steps),
           "latent_mse": float(metrics.latent_mse(z, z0).mean()),
           "max_step_residual": max((max(s["residual"]) for s in trace.steps if "residual" in s), default=None),
           "min_step_residual": min((max(s["residual"]) for s in trace.steps if "residual" in s), default=None),
           **sched.terminal()}
    if exact_fn is not None:
        row["xT_rel_err"] = float(metrics.relative_error(trace.x_T, exact_fn(sched, cond, trace.state)).max())
    elif getattr(model, "vae", None) is not None:
        a, b = model.decode(z0), model.decode(z)
        row["psnr"], row["ssim"] = float(metrics.psnr(a, b).mean()), float(metrics.ssim(a, b).mean())
    return row


def speed_ratio(model, z0, steps, args):
    """Paper solver vs ours (newton) in one run: the same eta, then ours asked for the paper's best step residual."""
    cond, sched = model.condition([""] * z0.shape[0]), model.schedule(steps)
    method = get_method("preciseinv").invert

    def timed(**cfg):
        start = time.perf_counter()
        trace = method(model, z0, cond, sched, **cfg)
        return trace, time.perf_counter() - start

    paper, t_paper = timed(solver="paper", eta=args.paper_eta, max_iters=args.paper_iters)
    target = [max(s["residual"]) for s in paper.steps]
    same, t_same = timed(solver="newton", eta=args.paper_eta)
    strict, t_strict = timed(solver="newton", eta=min(target))
    return {"steps": steps, "paper_seconds": t_paper, "paper_max_residual": max(target),
            "ours_seconds": t_same, "ours_max_residual": max(max(s["residual"]) for s in same.steps),
            "ratio": t_same / t_paper, "strict_target": min(target), "strict_seconds": t_strict,
            "strict_ratio": t_strict / t_paper,
            "strict_reached_every_step": all(max(o["residual"]) <= p for o, p in zip(strict.steps, target))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="oracle,sd,lcm,sd3")
    p.add_argument("--steps", default="2,4,10,50")
    p.add_argument("--methods", default="all", help="comma list of ddim,fixed_point,preciseinv,polaris or all")
    p.add_argument("--source", default="photo", choices=["photo", "generated"])
    p.add_argument("--eta", type=float, default=1e-10)
    p.add_argument("--paper-eta", type=float, default=1e-5)
    p.add_argument("--paper-iters", type=int, default=100)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--speed", action="store_true", help="also measure the paper/ours wall-time ratio")
    p.add_argument("--json", default="benchmarks/precise_bench/results.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    rows, speeds = [], []
    step_counts = [int(s) for s in args.steps.split(",")]
    for family in args.families.split(","):
        if family == "oracle":
            for pred in ("epsilon", "v_prediction", "flow"):
                model = GaussianModel(prediction=pred)
                z0 = model.sample_data(2, prompt="", seed=1)

                def exact(sched, cond, state, model=model, z0=z0):
                    if "guidance_w" in state:
                        return torch.cat([model.exact_inversion(z0[b:b + 1], sched, model.condition([""], cond.guidance),
                                                                state["guidance_w"][:, b].tolist())[0] for b in range(len(z0))])
                    return model.exact_inversion(z0, sched, cond)[0]

                for steps in step_counts:
                    for label, method, cfg, w in configs(args):
                        if w != 1.0:
                            continue  # the oracle's empty prompt makes guidance meaningless
                        rows.append({"model": f"oracle-{pred}", **run_one(model, z0, steps, label, method, cfg, w, exact)})
                        print(_line(rows[-1]), file=sys.stderr)
                    if args.speed:
                        speeds.append({"model": f"oracle-{pred}", **speed_ratio(model, z0, steps, args)})
            continue
        from inversa import load_model
        from inversa.tiny.random_pipelines import save_pipeline

        model = load_model(save_pipeline(family))
        for steps in step_counts:
            if args.source == "photo":
                z0 = photo_latent(model)
            else:
                z0 = generated_latent(model, model.schedule(steps), model.condition([""]))
            for label, method, cfg, w in configs(args):
                rows.append({"model": f"tiny-{family}", "source": args.source,
                             **run_one(model, z0, steps, label, method, cfg, w, prompt="a photo of an astronaut" if w != 1.0 else "")})
                print(_line(rows[-1]), file=sys.stderr)
            if args.speed:
                speeds.append({"model": f"tiny-{family}", **speed_ratio(model, z0, steps, args)})
    print(table(rows))
    if speeds:
        print("\n| model | steps | paper s (max res) | ours s, same eta (max res) | ratio | strict target | ours s, strict | strict ratio |"
              "\n|---|---|---|---|---|---|---|---|")
        for s in speeds:
            print(f"| {s['model']} | {s['steps']} | {s['paper_seconds']:.2f} ({s['paper_max_residual']:.1e}) | "
                  f"{s['ours_seconds']:.2f} ({s['ours_max_residual']:.1e}) | {s['ratio']:.3f} | {s['strict_target']:.1e} | "
                  f"{s['strict_seconds']:.2f} | {s['strict_ratio']:.3f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # one folder per benchmark
    with open(args.json, "w") as f:
        json.dump({"argv": sys.argv, "rows": rows, "speed": speeds}, f, indent=1, default=str)
    return 0


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _line(r):
    return f"{r['model']} {r['steps']} {r['method']}: mse {r['latent_mse']:.2e} {r['seconds']:.2f}s"


def table(rows) -> str:
    head = "| model | steps | a_T | method | PSNR | SSIM | latent MSE | x_T rel err | time s | NFE | iters | max step residual |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r['model']} | {r['steps']} | {r['alpha_T']:.3f} | {r['method']} | {_fmt(r.get('psnr'), '.2f')} | "
                   f"{_fmt(r.get('ssim'), '.4f')} | {r['latent_mse']:.2e} | {_fmt(r.get('xT_rel_err'), '.1e')} | "
                   f"{r['seconds']:.2f} | {r['nfe']:.0f} | {r['iters']} | {_fmt(r.get('max_step_residual'), '.1e')} |")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
