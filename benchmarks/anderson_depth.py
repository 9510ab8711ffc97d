"""How the Anderson history depth moves PreciseInv's precision at a fixed call budget on the trained models.

``preciseinv solver=anderson`` at each depth and cap (calls per step, the warm start's included), batch 1, novel
photos, 64 px, empty prompt, guidance 1, float32. The table is worst latent MSE per (model, photo, steps, cap) and
depth; rewritten after every run, so a killed run keeps what finished. Not a test: it measures.

    PYTHONPATH=src python benchmarks/anderson_depth.py --out benchmarks/anderson_depth/results
    PYTHONPATH=src python benchmarks/anderson_depth.py --render --out benchmarks/anderson_depth/results
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import hard_regime as H


def sweep(families, photos, steps, depths, caps, out):
    from inversa import load_model
    from inversa.io.images import to_tensor
    from inversa.tiny import default_model_path

    rows, arrays = [], H.novel_arrays()
    for fam in families:
        model = load_model(default_model_path() if fam == "embedded" else H.TRAINED[fam])
        for photo in photos:
            with torch.no_grad():
                z0 = model.encode(to_tensor(arrays[photo], 64, "center").reshape(1, 3, 64, 64))
            for n in steps:
                for depth in depths:
                    for cap in caps:
                        r = H.run(model, z0, "", 1.0, n, "preciseinv", {"solver": "anderson", "depth": depth,
                                                                         "max_iters": cap})
                        rows.append(r | {"fam": fam, "photo": photo, "n": n, "depth": depth, "cap": cap})
                        print(f"{fam} {photo} {n} steps depth {depth} cap {cap}: {r['latent_mse']:.2e}", flush=True)
                        write(rows, " ".join(sys.argv[1:]), out)


def write(rows, command, out) -> None:
    with open(out + ".json", "w") as f:
        json.dump({"command": command, "rows": rows}, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(rows, command))


def markdown(rows, command) -> str:
    depths = sorted({r["depth"] for r in rows})
    table = {}
    for r in rows:
        table.setdefault((r["fam"], r["photo"], r["n"], r["cap"]), {})[r["depth"]] = r["latent_mse"]
    lines = ["# Anderson depth at a fixed budget", "", f"`PYTHONPATH=src python benchmarks/anderson_depth.py {command}`",
             "", "Worst latent MSE (batch 1), `preciseinv solver=anderson`; **bold**: the best depth of the row.", "",
             "| model | photo | steps | cap | " + " | ".join(f"depth {d}" for d in depths) + " |",
             "|---|---|---|---|" + "---|" * len(depths)]
    wins = {d: 0 for d in depths}
    for (fam, photo, n, cap), by in sorted(table.items()):
        best = min(by.values())
        wins[min(by, key=by.get)] += 1
        cells = [(f"**{by[d]:.1e}**" if by[d] == best else f"{by[d]:.1e}") if d in by else "-" for d in depths]
        lines.append(f"| {fam} | {photo} | {n} | {cap} | " + " | ".join(cells) + " |")
    lines += ["", "Rows won: " + ", ".join(f"depth {d} {k}" for d, k in wins.items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/anderson_depth/results")
    p.add_argument("--families", default="embedded,embedded-lcm,embedded-flow")
    p.add_argument("--photos", default="motorcycle,flower")
    p.add_argument("--steps", default="1,2")
    p.add_argument("--depths", default="3,5,8")
    p.add_argument("--caps", default="20,50,100,200")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--render", action="store_true", help="no runs: rewrite the .md from the .json")
    args = p.parse_args(argv)
    if args.render:
        with open(args.out + ".json") as f:
            stored = json.load(f)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(stored["rows"], stored["command"]))
        return 0
    torch.set_num_threads(args.threads)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    sweep(args.families.split(","), args.photos.split(","), ints(args.steps), ints(args.depths), ints(args.caps),
          args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
