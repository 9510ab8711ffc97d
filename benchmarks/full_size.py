"""What inversion costs on the real architectures: SD 1.5, SD 2.1 (v), SDXL, SD3-medium, FLUX.1-dev, PixArt-Sigma.

Each denoiser is built from its published ``config.json`` (``benchmarks/configs/*.json``) with
random weights; nothing is downloaded. Substitutes, because no weights exist here and cost is
what is measured: the VAE is a tiny one with the real latent channels, scaling and 8x
downsampling (inversion runs on random unit-variance latents, so encoding is not timed); text
encoders are 2-layer CLIP/T5 models with the real output widths and sequence lengths (SD3's T5
is absent, as a pipeline loaded with ``text_encoder_3=None`` pads zeros). The denoiser runs in
``--dtype`` (default bfloat16) while latents and solver state stay float32.

Per method: seconds per image, NFE per image and per step, seconds per NFE (wall time per
batched network evaluation, solver overhead and backward passes included), peak memory (CUDA:
``max_memory_allocated``; CPU: the process's peak RSS) and the worst final step residual.
``--scale reduced`` (the default on CPU) keeps every block type but few blocks and channels,
so the test suite runs it in seconds. On a GPU, unchanged:

    python benchmarks/full_size.py --device cuda --json full_size.json
    python benchmarks/full_size.py --device cuda --arch sdxl --compile --sdpa flash --batch 4

``--count`` builds every config (FLUX.2 [dev], Qwen-Image, SANA 1.6B, Wan 2.1 1.3B/14B, CogVideoX-5B,
HunyuanDiT 1.2, HiDream-I1 too) on the meta device and prints its parameter count; those last eight are not
measured yet (their pipelines' text encoders have no substitute here).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import resource
import sys
import tempfile
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CONFIGS = pathlib.Path(__file__).parent / "configs"
ARCHS = ("sd15", "sd21", "sdxl", "sd3_medium", "flux1_dev", "pixart_sigma")
# denoisers whose pipelines need text encoders (Mistral-3, Qwen2.5-VL, Gemma-2, UMT5, BERT + mT5, Llama-3) or
# video VAEs that build_pipeline does not substitute yet: --count builds them on the meta device, measuring them is refused
DENOISER_ONLY = ("flux2_dev", "qwenimage", "sana_1600m", "wan21_1_3b", "wan21_14b", "cogvideox_5b", "ltx_video_2b",
                 "hunyuandit_v1_2", "hidream_i1_full")
METHODS = ("ddim", "fixed_point", "preciseinv", "preciseinv eta=0.01", "preciseinv solver=paper eta=0.01",
           "preciseinv solver=paper eta=1e-5")
SDPA = {"auto": None, "math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
        "cudnn": "CUDNN_ATTENTION"}  # --sdpa -> torch.nn.attention.SDPBackend


def load_spec(arch: str) -> dict:
    return json.loads((CONFIGS / f"{arch}.json").read_text())


def reduce(spec: dict) -> dict:
    """The same block types with one or two blocks and narrow channels; text widths kept (cheap)."""
    cfg = dict(spec["denoiser"]["config"])
    kind = spec["denoiser"]["class"]
    if kind == "UNet2DConditionModel":
        n = len(cfg["block_out_channels"])
        cfg.update(block_out_channels=[32 * min(i + 1, 2) for i in range(n)], layers_per_block=1, attention_head_dim=4)
        if "transformer_layers_per_block" in cfg:
            cfg["transformer_layers_per_block"] = 1
    elif kind == "SD3Transformer2DModel":
        cfg.update(num_layers=2, num_attention_heads=2, attention_head_dim=16, caption_projection_dim=32)
    elif kind == "FluxTransformer2DModel":
        cfg.update(num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=16, axes_dims_rope=[4, 6, 6])
    elif kind == "PixArtTransformer2DModel":
        cfg.update(num_layers=2, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32)
    return {**spec, "denoiser": {"class": kind, "config": cfg}}


def build_denoiser(spec: dict, dtype: torch.dtype, device: str):
    """The denoiser, created directly in ``dtype`` on ``device`` (FLUX in float32 would need 48 GB first)."""
    import diffusers

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            net = getattr(diffusers, spec["denoiser"]["class"]).from_config(spec["denoiser"]["config"])
    finally:
        torch.set_default_dtype(before)
    return net.eval()


def build_pipeline(spec: dict, net, dtype: torch.dtype, device: str):
    """``spec``'s diffusers pipeline around ``net``: tiny VAE and text encoders of the real widths."""
    import diffusers
    from diffusers import AutoencoderKL

    from inversa.tiny.parts import random_t5_encoder, random_text_encoder
    from inversa.tiny.vocab import make_t5_tokenizer, make_tokenizer

    vae_spec = spec["vae"]
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), latent_channels=vae_spec["latent_channels"],
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=8, scaling_factor=vae_spec["scaling_factor"],
                        shift_factor=vae_spec["shift_factor"])
    parts = {"vae": vae, "scheduler": getattr(diffusers, spec["scheduler"]["class"])(**spec["scheduler"]["config"]),
             "unet" if spec["denoiser"]["class"].startswith("UNet") else "transformer": net}
    clip_tok = make_tokenizer(tempfile.mkdtemp(prefix="inversa-tok-"))
    for i, enc in enumerate(spec["text_encoders"]):
        suffix = f"_{i + 1}" if i else ""
        if enc.get("substitute") == "zeros":
            parts[f"text_encoder{suffix}"] = parts[f"tokenizer{suffix}"] = None
        elif enc["kind"] == "t5":
            tok = make_t5_tokenizer()
            parts[f"text_encoder{suffix}"], parts[f"tokenizer{suffix}"] = random_t5_encoder(tok, enc["hidden"], seed=i), tok
        else:
            parts[f"text_encoder{suffix}"] = random_text_encoder(clip_tok, enc["hidden"], enc.get("projection"), seed=i)
            parts[f"tokenizer{suffix}"] = clip_tok
    if spec["pipeline"] == "StableDiffusionPipeline":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, spec["pipeline"])(**parts)
    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module) and part is not net:
            part.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parse_method(text: str) -> tuple[str, dict]:
    """``"preciseinv solver=paper eta=0.01"`` -> ``("preciseinv", {"solver": "paper", "eta": 0.01})``."""
    from inversa.cli.common import parse_options

    name, *pairs = text.split()
    return name, parse_options(pairs)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(fn, device: str) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def measure(model, z0, steps: int, methods: list[str], device: str, reps: int = 3) -> list[dict]:
    """One row for a bare network call, then one per method: time, NFE, memory, worst residual."""
    from inversa.editing.options import method_options
    from inversa.methods import get_method

    cond = model.condition([""] * len(z0))  # the paper's reconstruction protocol: empty prompt, no CFG
    sched = model.schedule(steps, shape=tuple(z0.shape))
    t = float(sched.timesteps[len(sched) // 2])
    with torch.no_grad():
        model.forward(z0, t, cond.cond)  # warm-up (and compilation)
        times = [timed(lambda: model.forward(z0, t, cond.cond), device)[1] for _ in range(reps)]
    rows = [{"method": f"one forward (batch {len(z0)})", "s_per_nfe": min(times)}]
    for text in methods:
        name, opts = parse_method(text)
        spec = get_method(name)
        opts = method_options(name, opts)
        if "keep_trajectory" in spec.options():
            opts["keep_trajectory"] = False
        model.nfe = 0
        reset_peak(device)
        trace, seconds = timed(lambda: spec.invert(model, z0, cond, sched, **opts), device)
        nfe = model.nfe / len(z0)
        worst = max((max(s["residual"]) for s in trace.steps if s.get("residual")), default=None)
        rows.append({"method": text, "s_per_image": seconds / len(z0), "nfe": nfe, "nfe_per_step": nfe / steps,
                     "s_per_nfe": seconds / max(nfe, 1), "peak_gib": peak_gib(device), "worst_residual": worst,
                     "finite": bool(torch.isfinite(trace.x_T).all())})
        print(f"  {text}: {rows[-1]['s_per_image']:.3g} s/image, {nfe:.0f} NFE, {rows[-1]['peak_gib']:.2f} GiB",
              file=sys.stderr, flush=True)
    return rows


def count(arch: str) -> dict:
    """The denoiser's parameter count, built from its published config on the meta device (no memory)."""
    spec = load_spec(arch)
    net = build_denoiser(spec, torch.bfloat16, "meta")
    params = sum(p.numel() for p in net.parameters())
    return {"arch": arch, "repo": spec["repo"], "class": spec["denoiser"]["class"], "params": params,
            "headline": spec.get("headline_params")}


def run_arch(arch: str, args) -> dict:
    from inversa.core.errors import InversaError
    from inversa.models.diffusers.base import DiffusersModel
    from inversa.models.diffusers.loader import DTYPES

    if arch in DENOISER_ONLY:
        raise InversaError(f"measuring {arch} needs its pipeline's own text encoders or video VAE, which full_size.py "
                           "does not substitute yet; --count builds its denoiser on the meta device")
    spec = load_spec(arch)
    spec = reduce(spec) if args.scale == "reduced" else spec
    size = args.size or (spec["resolution"] if args.scale == "full" else 128)
    dtype = DTYPES[args.dtype]
    net = build_denoiser(spec, dtype, args.device)
    model = DiffusersModel(build_pipeline(spec, net, dtype, args.device), name=f"{arch} ({args.scale}, random)")
    model.check_size(size, size)
    if args.compile:
        net.forward = torch.compile(net.forward)
    side = size // model.vae_scale
    z0 = torch.randn(args.batch, spec["vae"]["latent_channels"], side, side,
                     generator=torch.Generator().manual_seed(0)).to(args.device)
    backend = SDPA[args.sdpa]
    context = sdpa_kernel(getattr(SDPBackend, backend)) if backend else contextlib.nullcontext()
    with context:
        rows = measure(model, z0, args.steps, args.method or list(METHODS), args.device)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    return {"arch": arch, "repo": spec["repo"], "scale": args.scale, "size": size, "dtype": args.dtype,
            "batch": args.batch, "steps": args.steps, "device": args.device, "compile": args.compile, "sdpa": args.sdpa,
            "threads": torch.get_num_threads(), "params_m": params, "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| arch | params (M) | size | method | s / image | NFE / image | NFE / step | s / NFE | peak GiB | worst residual |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for row in res["rows"]:
            cells = [res["arch"], f"{res['params_m']:.1f}", str(res["size"]), row["method"]]
            if "nfe" not in row:
                cells += ["", "", "", f"{row['s_per_nfe']:.4g}", "", ""]
            else:
                cells += [f"{row['s_per_image']:.4g}", f"{row['nfe']:.0f}", f"{row['nfe_per_step']:.1f}",
                          f"{row['s_per_nfe']:.4g}", f"{row['peak_gib']:.2f}",
                          "" if row["worst_residual"] is None else f"{row['worst_residual']:.2g}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=ARCHS + DENOISER_ONLY,
                   help=f"repeatable (default: all of {', '.join(ARCHS)}; --count: all configs)")
    p.add_argument("--count", action="store_true", help="only build each denoiser on the meta device and count parameters")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", choices=("full", "reduced"), default=None,
                   help="full-size published configs or the reduced variant (default: full on a GPU, reduced on CPU)")
    p.add_argument("--size", type=int, default=0, help="image side (default: 512 SD 1.5/2.1, 1024 others; reduced 128)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"), help="network dtype")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=4, help="inversion steps")
    p.add_argument("--method", action="append", help="'NAME key=value ...', repeatable (default: METHODS)")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser's forward")
    p.add_argument("--sdpa", choices=list(SDPA), default="auto", help="scaled-dot-product attention backend")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    import diffusers

    args = parser().parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()
    args.scale = args.scale or ("full" if args.device.startswith("cuda") else "reduced")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.count:
        rows = [count(arch) for arch in args.arch or ARCHS + DENOISER_ONLY]
        print("| arch | denoiser | parameters | headline |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['arch']} | {r['class']} | {r['params']:,} | {r['headline'] or ''} |")
        return rows
    results = []
    for arch in args.arch or ARCHS:
        results.append(run_arch(arch, args))
        print(f"{arch}: done", file=sys.stderr, flush=True)
    first = results[0]
    print(f"device {args.device}, {args.scale} scale, {args.dtype} network, float32 state, batch {args.batch}, "
          f"{args.steps} steps, compile {args.compile}, sdpa {args.sdpa}, {first['threads']} threads")
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
