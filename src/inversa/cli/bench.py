"""``inversa bench`` and ``inversa report`` subcommands."""
from __future__ import annotations

import os
import sys


def add_command(sub) -> None:
    from inversa.cli.common import add_model_args

    p = sub.add_parser("bench", help="benchmark inversion methods over a dataset into a resumable SQLite store")
    add_model_args(p)
    p.add_argument("--methods", default="ddim,fixed_point",
                   help="comma-separated methods (vae_roundtrip is always added); edit task: all = every editing method")
    p.add_argument("--data", default="builtin:photos", help="image folder, builtin:photos | builtin:shapes, or pie:DIR (PIE-Bench layout)")
    p.add_argument("--captions", default=None, help="captions file: txt (file<TAB>caption) or JSON (COCO captions ok)")
    p.add_argument("--prompts", choices=("empty", "captions"), default="empty",
                   help="empty prompt (reconstruction protocol) or each image's caption")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-steps", type=int, default=None, help="reconstruction steps (default: as inverted)")
    p.add_argument("--spacing", default=None, help="leading | trailing | linspace")
    p.add_argument("--guidance", type=float, default=None, help="guidance w (default 1; 7.5 for --task edit)")
    p.add_argument("--size", type=int, default=None, help="square resolution (default: the model's size)")
    p.add_argument("--crop", choices=("center", "resize"), default="center",
                   help="center: centred square crop then resize; resize: squash without cropping")
    p.add_argument("--opt", action="append", metavar="METHOD:NAME=VALUE", help="method option, repeatable")
    p.add_argument("--decoder-inversion", choices=("off", "on", "both"), default="off",
                   help="decoder inversion stage: both = every method with and without it (adds the decoder ceiling row)")
    p.add_argument("--decoder-opt", action="append", metavar="NAME=VALUE", help="decoder inversion option, repeatable")
    p.add_argument("--lpips-weights", default=None,
                   help="local LPIPS-AlexNet weights (file or folder); env INVERSA_LPIPS_WEIGHTS also works")
    p.add_argument("--output", "-o", default="bench/results.sqlite", help="results store (SQLite)")
    p.add_argument("--task", choices=("reconstruct", "edit"), default="reconstruct",
                   help="edit: edit every item of --data pie:DIR (PIE-Bench layout) with PIE's metrics")
    p.add_argument("--blend", choices=("words", "mask", "none"), default="words",
                   help="edit task: keep the background outside the blended words' attention, PIE's mask, or not")
    p.add_argument("--cross-replace", type=float, default=0.4, help="edit task: cross-attention injection fraction")
    p.add_argument("--lpips-squeeze-weights", default=None, metavar="PATH",
                   help="edit task: SqueezeNet 1.1 + LPIPS squeeze.pth weights (file or folder) for background LPIPS")
    p.add_argument("--dino-weights", default=None, metavar="DIR", help="edit task: DINO ViT-B/8 transformers folder")
    p.add_argument("--clip-weights", default=None, metavar="DIR", help="edit task: CLIP ViT-L/14 transformers folder")
    p.set_defaults(run=run_bench)

    p = sub.add_parser("report", help="Markdown + HTML report (gallery, plots) of a results store")
    p.add_argument("results", help="results store (.sqlite)")
    p.add_argument("--output", "-o", default="report", help="report folder")
    p.add_argument("--max-images", type=int, default=12, help="images in the gallery")
    p.set_defaults(run=run_report)


def _options(pairs, methods) -> dict:
    from inversa.cli.common import parse_options
    from inversa.core.errors import InversaError

    out: dict[str, dict] = {}
    for pair in pairs or []:
        method, sep, rest = pair.partition(":")
        if not sep or "=" not in rest:
            raise InversaError(f"--opt {pair!r} must look like METHOD:NAME=VALUE")
        if method not in methods:
            raise InversaError(f"--opt {pair!r} names method {method}, which is not in --methods")
        out.setdefault(method, {}).update(parse_options([rest]))
    return out


def _distributed():
    """(rank, world, state) from accelerate when launched with ``accelerate launch``, else (0, 1, None)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state


def run_bench(args) -> int:
    import torch

    from inversa.bench.datasets import open_dataset
    from inversa.bench.report import markdown, table
    from inversa.bench.runner import BenchConfig, check_methods, run
    from inversa.bench.store import Store
    from inversa.cli.common import open_model, parse_options
    from inversa.core.metrics import load_lpips

    if args.task == "edit":
        return run_edit(args)
    args.guidance = 1.0 if args.guidance is None else args.guidance
    rank, world, state = _distributed()
    if state is not None and args.device is None and state.device.type != "cpu":
        args.device = str(state.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = BenchConfig(methods, steps=args.steps, sample_steps=args.sample_steps, spacing=args.spacing,
                      guidance=args.guidance, crop=args.crop, prompts=args.prompts,
                      options=_options(args.opt, methods), decoder=args.decoder_inversion,
                      decoder_options=parse_options(args.decoder_opt))
    check_methods(cfg)
    dataset = open_dataset(args.data, args.captions, args.limit)
    model = open_model(args)
    cfg.size = args.size or model.default_size()
    weights = args.lpips_weights or os.environ.get("INVERSA_LPIPS_WEIGHTS")
    lpips_net = load_lpips(weights).to(model.device) if weights else None
    if lpips_net is None and rank == 0:
        print("note: LPIPS skipped (no local AlexNet-LPIPS weights; pass --lpips-weights PATH)", file=sys.stderr)
    torch.set_grad_enabled(True)
    summary = run(model, dataset, args.output, cfg, rank=rank, world=world, lpips_net=lpips_net)
    print(f"bench[{rank}/{world}]: {summary.written} rows written, {summary.skipped} already done, "
          f"{summary.failed} failed -> {args.output}", file=sys.stderr)
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        with Store(args.output) as store:
            configs = store.configs()
            print(markdown(table(store.rows(), configs), configs))
    return 0


def run_edit(args) -> int:
    from inversa.bench import edit_task
    from inversa.bench.learned_metrics import load_learned
    from inversa.cli.common import open_model
    from inversa.core.errors import InversaError

    if not args.data.startswith("pie:"):
        raise InversaError(f"--task edit needs --data pie:DIR (a PIE-Bench folder), not {args.data!r}")
    learned = load_learned({"lpips": args.lpips_squeeze_weights, "structure": args.dino_weights,
                            "clip": args.clip_weights})
    for name, why in learned.skipped.items():
        print(f"note: {name} skipped ({why})", file=sys.stderr)
    model = open_model(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = edit_task.editing_methods(model) if methods == ["all"] else methods
    cfg = edit_task.EditConfig(methods, steps=args.steps, guidance=7.5 if args.guidance is None else args.guidance,
                               cross_replace=args.cross_replace, blend=args.blend,
                               size=args.size or model.default_size(), options=_options(args.opt, methods))
    written, skipped = edit_task.run(model, args.data[4:], args.output, cfg, args.limit, learned=learned)
    print(f"bench: {written} edit rows written, {skipped} already done -> {args.output}", file=sys.stderr)
    print(edit_task.table(args.output))
    return 0


def run_report(args) -> int:
    from inversa.bench.report import write_report

    from inversa.cli.common import print_notes

    out = write_report(args.results, args.output, args.max_images)
    print_notes(out["notes"])
    print(out["text"])
    print(f"report -> {out['html']}")
    return 0
