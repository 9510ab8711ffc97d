"""PreciseInv's Table 2 on the embedded LCM sibling: ddim, fixed_point (ReNoise-style averaging),
preciseinv with the paper's solver at the fast / precise presets (eta 1e-2 / 1e-5) and with the
default solver, at 1, 2 and 4 steps, on the builtin photos (empty prompt) and held-out shapes
(their captions). Runs ``inversa bench``'s runner into one resumable store and prints the table
(PSNR / SSIM against the image, latent MSE, the VAE ceiling, inversion time, NFE).

    PYTHONPATH=src python benchmarks/lcm_table.py --limit 4 --out benchmarks/lcm_table/table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np
import torch

ROWS = [("ddim", "ddim", {}),
        ("fixed_point (ReNoise averaging, 10 iters)", "fixed_point", {"variant": "average", "iters": 10}),
        ("preciseinv paper solver, fast (eta 1e-2)", "preciseinv", {"solver": "paper", "eta": 1e-2}),
        ("preciseinv paper solver, precise (eta 1e-5)", "preciseinv", {"solver": "paper", "eta": 1e-5}),
        ("preciseinv default solver", "preciseinv", {})]


def heldout_shapes(count: int):
    """Shapes whose (colour, shape, position) never occurred in training, as a bench dataset."""
    from inversa.bench.datasets import Dataset, Item
    from inversa.tiny import shapes

    items = [Item(f"heldout/{k:02d}", s.caption, f"inversa.tiny.shapes heldout seed 99 #{k}", lambda a=s.image: a)
             for k, s in enumerate(shapes.dataset(count, seed=99, split="heldout"))]
    return Dataset("shapes-heldout", items, "inversa.tiny.shapes:heldout:99")


def run(model, datasets, steps_list, out: str) -> None:
    from inversa.bench.runner import BenchConfig
    from inversa.bench.runner import run as bench_run

    for name, data in datasets.items():
        for steps in steps_list:
            for _, method, opts in ROWS:
                cfg = BenchConfig([method], steps=steps, size=model.default_size(),
                                  prompts="captions" if name == "shapes" else "empty", options={method: opts})
                bench_run(model, data, f"{out}-{name}.sqlite", cfg, log=lambda msg: print(msg, file=sys.stderr))


def collect(paths: list[str]) -> list[dict]:
    """One row per (dataset, steps, table row): means over the images of the stores at ``paths``."""
    from inversa.bench.store import Store

    configs, rows = {}, []
    for path in paths:
        with Store(path) as store:
            configs.update(store.configs())
            rows += [r for r in store.rows() if r["status"] == "ok"]
    groups = defaultdict(list)
    for r in rows:
        c = configs[r["config_hash"]]["config"]
        label = next((lab for lab, m, o in ROWS if m == r["method"] and o == c.get("options", {})), r["method"])
        groups[(c["dataset"], c.get("steps", 0), label)].append(r)
    out = []
    order = [lab for lab, _, _ in ROWS]
    for (dataset, steps, label), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2])
                                                                              if kv[0][2] in order else -1)):
        out.append(dict(dataset=dataset, steps=steps, method=label, images=len(rs),
                        **{k: float(np.mean([r[k] for r in rs])) if rs[0][k] is not None else None
                           for k in ("psnr", "ssim", "latent_mse", "seconds", "nfe")}))
    return out


def markdown(rows: list[dict], settings: str) -> str:
    ceiling = {r["dataset"]: r for r in rows if r["method"] == "vae_roundtrip"}
    lines = [settings, ""]
    for dataset in sorted(ceiling):
        c = ceiling[dataset]
        lines += [f"### {dataset} ({c['images']} images; VAE ceiling {c['psnr']:.2f} dB PSNR, {c['ssim']:.4f} SSIM)", "",
                  "| steps | method | PSNR | SSIM | latent MSE | time s | NFE |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["dataset"] == dataset and r["method"] != "vae_roundtrip":
                lines.append(f"| {r['steps']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                             f"{r['latent_mse']:.2e} | {r['seconds']:.2f} | {r['nfe']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded-lcm")
    p.add_argument("--steps", default="1,2,4")
    p.add_argument("--limit", type=int, default=4, help="images per dataset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/lcm_table/table", help="writes OUT.md, OUT.json and OUT-{photos,shapes}.sqlite stores")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from inversa import load_model
    from inversa.bench.datasets import open_dataset

    model = load_model(args.model)
    datasets = {"photos": open_dataset("builtin:photos", limit=args.limit), "shapes": heldout_shapes(args.limit)}
    start = time.time()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # one folder per benchmark
    run(model, datasets, [int(s) for s in args.steps.split(",")], args.out)
    rows = collect([f"{args.out}-{name}.sqlite" for name in datasets])
    settings = (f"Model {args.model} ({model.family}, embedded guidance {model.embedded_guidance}, no CFG: 1 NFE per "
                f"network call), float32, {args.limit} photos (empty prompt) and {args.limit} held-out shapes (their "
                f"captions), 64 px; reconstruction with the method's own sampler at the same steps; time = inversion "
                f"only; {args.threads} torch thread on a 2-core CPU shared with other jobs; {time.time() - start:.0f} s "
                f"(rows already in the store are not rerun).")
    text = markdown(rows, settings)
    print(text)
    with open(args.out + ".md", "w") as f:
        f.write(f"# LCM sibling: Table 2\n\n`PYTHONPATH=src python benchmarks/lcm_table.py {' '.join(argv or sys.argv[1:])}`\n\n{text}")
    with open(args.out + ".json", "w") as f:
        json.dump({"argv": sys.argv, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
