"""Every inversion method, both editors, decoder inversion, stock parity and the siblings on one device.

One line per check (OK with the reconstruction's latent MSE, or FAIL with the error and where it was raised),
on the shipped tiny models at 64 px and 4 steps: a minute on a GPU. Compare its MSE column with a CPU run:

    PYTHONPATH=src python benchmarks/device_smoke.py cuda
    PYTHONPATH=src python benchmarks/device_smoke.py cpu
"""
import sys
import time
import traceback

import torch
import inversa
from inversa.core.metrics import latent_mse
from inversa.editing import edit as E

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
IMG = "examples/astronaut.png"
ok = fail = 0

def check(name, fn):
    global ok, fail
    t = time.perf_counter()
    try:
        msg = fn()
        ok += 1
        print(f"OK   {name:40s} {time.perf_counter() - t:6.2f}s {msg}", flush=True)
    except Exception as exc:
        fail += 1
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"FAIL {name:40s} {type(exc).__name__}: {str(exc)[:200]} @ {where.filename.split('/')[-1]}:{where.lineno}", flush=True)

def inv_check(model, method, steps=4, prompt="", guidance=1.0, **opts):
    inv = inversa.invert(model, IMG, prompt, method=method, steps=steps, guidance=guidance, **opts)
    z = inversa.reconstruct(model, inv, decode=False)
    assert z.device.type == torch.device(dev).type and torch.isfinite(z).all()
    return f"latent MSE {float(latent_mse(z, inv.z0).max()):.2e}"

for dtype in ["float32"]:
    m = inversa.load_model("embedded", dtype=dtype, device=dev)
    for meth, o in [("ddim", {}), ("fixed_point", {}), ("preciseinv", {}), ("preciseinv", {"solver": "paper"}),
                    ("preciseinv", {"solver": "newton"}), ("preciseinv", {"solver": "gauss_newton"}),
                    ("preciseinv", {"solver": "lbfgs"}), ("preciseinv", {"solver": "anderson"}),
                    ("preciseinv", {"sampler": "ddpm"}), ("edict", {}), ("bdia", {}), ("ddpm_edit_friendly", {}),
                    ("cfgpp", {})]:
        check(f"{meth} {o}", lambda: inv_check(m, meth, **o))
    for meth, o in [("null_text", {}), ("prompt_tuning", {}), ("negative_prompt", {}), ("direct", {}),
                    ("spdinv", {}), ("dci", {}), ("polaris", {}), ("polaris", {"base": "fixed_point"}),
                    ("preciseinv", {})]:
        check(f"{meth} {o} w7.5", lambda: inv_check(m, meth, prompt="a red circle", guidance=7.5, **o))
    check("decoder inversion + preciseinv", lambda: inv_check(m, "preciseinv", decoder_inversion=True))
    check("edit direct, local blend", lambda: str(tuple(E.edit(m, IMG, "a red circle on a blue background",
          "a green circle on a blue background", "direct", blend="red green").shape)))
    check("edit ddpm_edit_friendly", lambda: str(tuple(E.edit(m, IMG, "a red circle", "a green circle",
          "ddpm_edit_friendly").shape)))

    def stock():
        pipe = m.pipe
        pipe.scheduler = inversa.stock_scheduler(pipe)
        inv = inversa.invert(m, IMG, method="preciseinv", steps=4)
        lat = pipe("", latents=inv.x_T, num_inference_steps=4, guidance_scale=1.0, output_type="latent").images
        return f"stock latent MSE {float(latent_mse(lat, inv.z0).max()):.2e}"
    check("stock parity (SD pipeline)", stock)
for name in ["embedded-lcm"]:
    m = inversa.load_model(name, device=dev)
    check(f"{name} preciseinv 2 steps", lambda: inv_check(m, "preciseinv", steps=2))
for dtype in ["bfloat16", "float16"]:
    m = inversa.load_model("embedded", dtype=dtype, device=dev)
    check(f"embedded {dtype} preciseinv", lambda: inv_check(m, "preciseinv"))
m = inversa.load_model("embedded-flow", device=dev)
for meth in ["ddim", "fixed_point", "preciseinv", "rf_solver", "fireflow", "uni_inv", "rf_inversion"]:
    check(f"flow {meth}", lambda: inv_check(m, meth))
check("flow edit flowedit", lambda: str(tuple(E.edit(m, IMG, "a red circle", "a green circle", "flowedit").shape)))
print(f"{ok} ok, {fail} failed on {dev}")
