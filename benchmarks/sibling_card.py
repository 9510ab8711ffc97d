"""Held-out caption evaluation of the embedded model's siblings against their 10-step teacher, and their model cards.

Runs ``eval_tiny``'s measures (50 held-out captions, one sample each, guidance 3) on the teacher
(the embedded model, DDIM 10 steps) and on the sibling at each of ``--steps`` with its own
scheduler (LCMScheduler / FlowMatchEuler), then with ``--write-card`` writes README.md,
eval.json, loss.png and samples.png into the sibling's folder.

    PYTHONPATH=src python benchmarks/sibling_card.py --kind lcm --run /work/runs/embedded-lcm --write-card
    PYTHONPATH=src python benchmarks/sibling_card.py --kind flow --run /work/runs/embedded-flow --write-card
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_tiny as E  # noqa: E402

from inversa.tiny import shapes as S  # noqa: E402

STEPS = {"lcm": "1,2,4", "flow": "10,28"}
POINTS = ("object_colour", "object_colour_anywhere", "background_colour", "shape", "position")


def evaluate(pipe, captions, steps: int, guidance: float, seed: int) -> tuple[dict, list]:
    start = time.time()
    images = E.generate(pipe, captions, steps, guidance, seed)
    seconds = time.time() - start
    rows = [E.score(im, c) for im, c in zip(images, captions)]
    shuffled = [E.score(im, captions[(i + 7) % len(captions)]) for i, im in enumerate(images)]
    return dict(steps=steps, sample_seconds=seconds, heldout=E.summarise(rows),
                shuffled_control=E.summarise(shuffled)), images


def gap(result: dict, teacher: dict) -> float:
    """Largest shortfall below the teacher, in percentage points (IoUs x 100)."""
    h, t = result["heldout"], teacher["heldout"]
    return max([100 * (t[k] - h[k]) for k in POINTS + ("iou", "centred_iou")])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("lcm", "flow"), required=True)
    ap.add_argument("--model", default=None, help="sibling folder (default: the shipped one)")
    ap.add_argument("--run", default=None, help="training folder (losses.csv, training.json)")
    ap.add_argument("--steps", default=None, help="sibling sampling steps (lcm 1,2,4; flow 10,28)")
    ap.add_argument("--teacher-steps", type=int, default=10)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-card", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from inversa import load_model
    from inversa.tiny import EMBEDDED

    folder = args.model or EMBEDDED[f"embedded-{args.kind}"]
    captions = [s.caption for s in S.dataset(args.count, seed=99, split="heldout")]
    truth = E.summarise([E.score(s.image, s.caption) for s in S.dataset(args.count, seed=99, split="heldout")])
    teacher_pipe = load_model("embedded").pipe
    teacher, _ = evaluate(teacher_pipe, captions, args.teacher_steps, args.guidance, args.seed)
    pipe = load_model(folder).pipe
    results, few_step_teacher, samples = [], [], None
    for steps in [int(s) for s in (args.steps or STEPS[args.kind]).split(",")]:
        r, images = evaluate(pipe, captions, steps, args.guidance, args.seed)
        r["max_gap_to_teacher_points"] = gap(r, teacher)
        results.append(r)
        samples = images
        if args.kind == "lcm":  # what distillation buys: the teacher itself at the same few steps
            few_step_teacher.append(evaluate(teacher_pipe, captions, steps, args.guidance, args.seed)[0])
    out = dict(model=folder, count=args.count, guidance=args.guidance, teacher=teacher, sibling=results,
               teacher_same_steps=few_step_teacher, generator=truth, threads=args.threads)
    print(json.dumps(out, indent=2))
    if args.write_card:
        from PIL import Image

        Image.fromarray(E.grid(samples[:40], 10)).save(os.path.join(folder, "samples.png"), optimize=True)
        if args.run and os.path.exists(os.path.join(args.run, "losses.csv")):
            E.loss_curve(os.path.join(args.run, "losses.csv"), os.path.join(folder, "loss.png"))
            losses = [float(line.split(",")[2]) for line in open(os.path.join(args.run, "losses.csv"))]
            out["final_loss"] = sum(losses[-20:]) / len(losses[-20:])
        training = E.read_training(args.run, folder)
        with open(os.path.join(folder, "eval.json"), "w") as f:
            json.dump(out, f, indent=2)
        with open(os.path.join(folder, "training.json"), "w") as f:
            json.dump(training, f, indent=2)
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(card(args.kind, out, training, captions[:40], pipe))
    return 0


INTRO = {
    "lcm": ["# inversa tiny shapes model: LCM sibling (`--model embedded-lcm`)", "",
            "A latent consistency model (Luo et al. 2023) distilled from the embedded model (`--model embedded`), which is",
            "its teacher: same VAE, text encoder and tokenizer; the UNet is the teacher's plus LCM's guidance-scale input",
            "(`time_cond_proj_dim` 256), stored in float16. A `LatentConsistencyModelPipeline` folder with an",
            "`LCMScheduler` (50-step skipping grid, v-prediction, zero terminal SNR): it samples in 1, 2 or 4 steps with",
            "no classifier-free guidance pass (the guidance scale is an input; trained for 2-5, inversa's default here 3).",
            "", "## Recipe", "",
            "`inversa train-tiny --recipe lcm` (`inversa.tiny.train_lcm`): LCM's Algorithm 1 on cached latents of the shapes",
            "training set: a latent noised to t on the 50-step grid (t = 19, 39, ..., 999), the teacher's guided DDIM step",
            "(w uniform in [1, 4], guidance scale w + 1) to t - 20, the EMA target network (decay 0.95) at t - 20, pseudo-Huber",
            "loss (c = 0.001) between the student's and the target's consistency functions (c_skip, c_out as LCMScheduler);",
            "the student starts as the teacher (zero-initialised guidance input). AdamW, lr 1e-4, batch 16. Shipped weights:",
            "the EMA target."],
    "flow": ["# inversa tiny shapes model: flow sibling (`--model embedded-flow`)", "",
             "A tiny Stable Diffusion 3 (MMDiT transformer, rectified flow) trained on the embedded model's shapes data.",
             "Only the transformer is new: the embedded model's VAE and its CLIP text encoder (frozen; used as both of",
             "SD3's CLIP encoders, with an identity `text_projection`, and no T5) are reused. A",
             "`StableDiffusion3Pipeline` folder (FlowMatchEulerDiscreteScheduler, shift 3), transformer stored in float16.",
             "", "## Recipe", "",
             "`inversa train-tiny --recipe flow` (`inversa.tiny.train_flow`): flow matching on cached latents,",
             "x_s = (1 - s) x0 + s noise, target noise - x0; s logit-normal then shifted by 3; captions dropped to '' with",
             "probability 0.1 (CFG); AdamW lr 5e-4, batch 16, EMA 0.998 (shipped). SD3Transformer2DModel: patch 2",
             "(16x16 tokens), 4 joint blocks, 4 heads of 32."],
}


def card(kind: str, out: dict, training: dict, captions: list[str], pipe) -> str:
    stage = training.get(kind, {})
    net = pipe.unet if kind == "lcm" else pipe.transformer
    params = sum(p.numel() for p in net.parameters())
    teacher, sib = out["teacher"], out["sibling"]
    name = "LCM" if kind == "lcm" else "flow (Euler)"
    lines = INTRO[kind] + [
        f"{'UNet' if kind == 'lcm' else 'Transformer'}: {params / 1e6:.2f} M parameters.", "",
        "## Training", "", "```", *training.get("commands", ["(command not recorded)"]), "```", "",
        f"- {stage.get('steps', '?')} steps (batch {training.get('batch_size', '?')}) in {stage.get('seconds', 0) / 60:.1f} min, "
        f"mean loss of the last 20 steps {out.get('final_loss', float('nan')):.4f}; {training.get('dataset_size', '?')} "
        "cached training latents.",
        f"- Hardware: CPU, {training.get('torch_threads', '?')} torch thread under `nice -n 19`, on a 2-core machine shared "
        "with six other jobs (so most of the wall time went to them).",
        f"- Resume (the checkpoint stays in the run folder; `--minutes` is the total): `inversa train-tiny --recipe {kind} "
        f"-o RUN --resume --minutes N --steps 100000 --threads 1 --no-progress`, then copy RUN's model files here and rerun",
        f"  `benchmarks/sibling_card.py --kind {kind} --run RUN --write-card`.", "",
        "![loss curve](loss.png)", "",
        f"## Evaluation ({out['count']} held-out captions, guidance {out['guidance']})", "",
        "`benchmarks/sibling_card.py` with `benchmarks/eval_tiny.py`'s measures (see the embedded model's card): the teacher",
        f"(embedded model, DDIM {teacher['steps']} steps, CFG) and this model with its own scheduler. 'gap' = the largest",
        "shortfall below the teacher over the columns, in percentage points (IoU x 100).", "",
        "| | object colour (at its place) | object colour (anywhere) | background colour | mask IoU | centred IoU | shape | position |",
        "|---|---|---|---|---|---|---|---|",
        E._row(f"teacher, {teacher['steps']} steps ({teacher['sample_seconds']:.0f} s)", teacher["heldout"]),
        *[E._row(f"{name}, {r['steps']} steps ({r['sample_seconds']:.0f} s; gap {r['max_gap_to_teacher_points']:.0f} pts)",
               r["heldout"]) for r in sib],
        *[E._row(f"teacher at {r['steps']} DDIM steps ({r['sample_seconds']:.0f} s)", r["heldout"])
          for r in out.get("teacher_same_steps", [])],
        E._row(f"control: {name} {sib[-1]['steps']} steps, shuffled captions", sib[-1]["shuffled_control"]),
        E._row("generator (upper bound)", out["generator"]), "",
        "**Status:** " + "; ".join(f"{r['steps']} steps {'within' if r['max_gap_to_teacher_points'] <= 10 else 'not within'}"
                                   " 10 points of the teacher" for r in sib) + ".", "",
        "![samples](samples.png)", "",
        f"Samples at {sib[-1]['steps']} steps, row by row (10 per row):", "",
    ] + [f"{i + 1}. {c}" for i, c in enumerate(captions)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
