"""FLUX.1 stock parity and method figures on tiny random FLUX pipelines.

For each method: invert the astronaut photo, then compare ``inversa.reconstruct`` with the
stock ``FluxPipeline(latents=pack(x_T), output_type="latent")`` (max relative error over
the batch) and with the image's latent. Not a test: the figures depend on the machine. Example:

    PYTHONPATH=src python benchmarks/flux_parity.py --dtypes float64,float32 --steps 4,10
"""
from __future__ import annotations

import argparse
import time

import torch

from inversa import invert, load_model, reconstruct
from inversa.core.metrics import relative_error
from inversa.models.diffusers.flux import pack, unpack
from inversa.tiny.random_pipelines import save_pipeline

METHODS = {"ddim": {}, "fixed_point": {"iters": 6}, "preciseinv": {"eta": 1e-12}}


def photo(size: int) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((size, size))
    return torch.tensor(list(img.getdata()), dtype=torch.float32).view(size, size, 3).permute(2, 0, 1)[None] / 127.5 - 1


def row(model, variant: str, method: str, steps: int, size: int, prompt: str) -> str:
    start = time.perf_counter()
    inv = invert(model, photo(size).to(model.work_dtype), prompt, method=method, steps=steps, **METHODS[method])
    seconds = time.perf_counter() - start
    ours = reconstruct(model, inv, decode=False)
    h, w = ours.shape[-2:]
    guidance = {"guidance_scale": model.embedded_guidance} if variant == "flux" else {}
    tokens = model.pipe(prompt, latents=pack(inv.x_T), num_inference_steps=steps, height=h * model.vae_scale,
                        width=w * model.vae_scale, output_type="latent", **guidance).images
    stock = unpack(tokens, h, w)
    return (f"| {variant} | {str(model.dtype).replace('torch.', '')} | {method} | {steps} | "
            f"{float(relative_error(stock, ours).max()):.1e} | {float(relative_error(ours, inv.z0).max()):.1e} | "
            f"{float(relative_error(stock, inv.z0).max()):.1e} | {inv.stats['nfe']:.0f} | {seconds:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="flux,flux-schnell")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--steps", default="4,10")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (latent side = size / 2)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| pipeline | dtype | method | steps | stock vs reconstruct | reconstruct vs z0 | stock vs z0 | NFE | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        folder = save_pipeline(variant)
        for dtype in args.dtypes.split(","):
            model = load_model(folder, dtype=dtype)
            for steps in map(int, args.steps.split(",")):
                for method in METHODS:
                    print(row(model, variant, method, steps, args.size, "a photo of an astronaut"), flush=True)


if __name__ == "__main__":
    main()
