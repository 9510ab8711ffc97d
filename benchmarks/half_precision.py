"""PreciseInv with a bfloat16 network against float32: latent MSE after reconstruction and NFE.

The bfloat16 floor is the float32 inversion's ``x_T`` sampled by the bfloat16 network: no
inversion replayed in bfloat16 can expect to beat it by much, since the sampler's own rounding
is in it. Models: the embedded (trained) tiny model on the astronaut photo and tiny random
pipelines. Example:

    PYTHONPATH=src python benchmarks/half_precision.py --models embedded,sd --steps 2,4
"""
from __future__ import annotations

import argparse

import torch

from inversa import load_model
from inversa.core.metrics import latent_mse
from inversa.inversion.api import invert, reconstruct


def photo(size: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image
    from skimage import data

    img = np.array(Image.fromarray(data.astronaut()).resize((size, size)))
    return torch.tensor(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def model_path(name: str) -> str:
    if name == "embedded":
        from inversa.tiny import default_model_path

        return default_model_path()
    from inversa.tiny.random_pipelines import save_pipeline

    return save_pipeline(name)


def mse(model, image, inv) -> float:
    return float(latent_mse(model.encode(image), reconstruct(model, inv, decode=False)).mean())


def row(path: str, steps: int) -> dict:
    m32, m16 = load_model(path, dtype="float32"), load_model(path, dtype="bfloat16")
    image = photo(m32.default_size())
    out = {}
    for label, model in (("float32", m32), ("bfloat16", m16)):
        model.nfe = 0
        inv = invert(model, image, steps=steps)
        out[label] = (mse(model, image, inv), model.nfe)
        if label == "float32":
            out["floor"] = mse(m16, image, inv)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="embedded,sd,sd2v")
    p.add_argument("--steps", default="2,4")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | steps | float32 MSE | float32 NFE | bfloat16 MSE | bfloat16 NFE | MSE ratio | NFE ratio "
          "| floor: float32 x_T sampled in bfloat16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        path = model_path(name)
        for steps in map(int, args.steps.split(",")):
            r = row(path, steps)
            (a, na), (b, nb) = r["float32"], r["bfloat16"]
            print(f"| {name} | {steps} | {a:.3g} | {na} | {b:.3g} | {nb} | {b / a:.1f} | {nb / na:.2f} | {r['floor']:.3g} |",
                  flush=True)


if __name__ == "__main__":
    main()
