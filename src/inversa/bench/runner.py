"""Run methods over a dataset: one store row per image x method x config, written as it finishes.

The VAE round trip (decode(encode(x))) is a row of its own, method ``vae_roundtrip``:
the ceiling no latent inversion can beat. Each process of a data-parallel run takes
every ``world``-th image (``rank``, ``rank + world``, ...) and writes the shared store.
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch

from inversa.bench.datasets import Dataset
from inversa.bench.store import Store, config_hash
from inversa.core import metrics
from inversa.core.errors import InversaError
from inversa.core.replay import denoise_step
from inversa.editing.options import method_options
from inversa.inversion.api import condition_of, invert, reconstruct, schedule_of
from inversa.io.images import save_image
from inversa.methods import get_method

VAE_ROW = "vae_roundtrip"
DECODER_ROW = "vae_decoder_inverted"
CEILINGS = (VAE_ROW, DECODER_ROW)
DECODER_MODES = ("off", "on", "both")


@dataclass
class BenchConfig:
    """Everything that defines a result besides the image (hashed into the row key)."""

    methods: list[str]
    steps: int = 10
    sample_steps: int | None = None
    spacing: str | None = None
    guidance: float = 1.0
    size: int = 64
    crop: str = "center"
    prompts: str = "empty"  # "empty" (reconstruction protocol) or "captions"
    options: dict[str, dict] = field(default_factory=dict)  # per-method options
    vae_row: bool = True
    dataset: str = ""  # what the images are (builtin:NAME or a folder's real path)
    decoder: str = "off"  # decoder inversion: off, on, or both (each method with and without)
    decoder_options: dict = field(default_factory=dict)

    def keys(self, model) -> list[tuple[str, str, dict]]:
        """(method, config_hash, config) for every row an image gets."""
        base = {"model": model.name, "dtype": str(model.dtype).replace("torch.", ""), "size": self.size,
                "crop": self.crop, "dataset": self.dataset}
        out = []
        decoder = [{"decoder_inversion": dict(self.decoder_options)}]
        uses = {"off": [{}], "on": decoder, "both": [{}] + decoder}[self.decoder]
        ceilings = ([(VAE_ROW, {})] if self.vae_row else []) + ([(DECODER_ROW, decoder[0])] if decoder[0] in uses else [])
        for m, extra in ceilings:
            cfg = {"method": m, **base, **extra}
            out.append((m, config_hash(cfg), cfg))
        for m in self.methods:
            for extra in uses:
                cfg = {"method": m, **base, "steps": self.steps, "sample_steps": self.sample_steps or self.steps,
                       "spacing": self.spacing, "guidance": self.guidance, "prompts": self.prompts,
                       "options": self.options.get(m, {}), **extra}
                out.append((m, config_hash(cfg), cfg))
        return out


@dataclass
class RunSummary:
    written: int = 0
    skipped: int = 0
    failed: int = 0


def check_methods(cfg: BenchConfig) -> None:
    """Fail before any work on unknown methods or options."""
    if cfg.decoder not in DECODER_MODES:
        raise InversaError(f"decoder inversion mode {cfg.decoder!r}: expected one of {', '.join(DECODER_MODES)}")
    from inversa.models.decoder import options

    options(cfg.decoder_options)
    for m in cfg.methods:
        if m in CEILINGS:
            raise InversaError(f"{m} is a ceiling row, added by the benchmark itself; do not list it in --methods")
        cfg.options[m] = method_options(m, cfg.options.get(m, {}))


SHARED = ("model", "dataset", "data", "resolution", "crop", "dtype")  # one store holds one of each


def check_protocol(store: Store, proto: dict, path: str) -> None:
    """Refuse to add rows that would sit in one table with rows of other images, model or resolution."""
    for entry in store.configs().values():
        old = entry["protocol"]
        differ = [k for k in SHARED if k in old and old[k] != proto[k]]
        if differ:
            have = ", ".join(f"{k} {old[k]}" for k in differ)
            want = ", ".join(f"{k} {proto[k]}" for k in differ)
            raise InversaError(f"store {path} holds results for {have}; this run is for {want}: "
                               "write it to another store (-o)")


def protocol(model, cfg: BenchConfig, dataset: Dataset) -> dict:
    """What a results table must state (recorded once per config)."""
    sched = model.schedule(cfg.steps, cfg.spacing)
    return {"model": model.name, "family": model.family, "prediction": model.prediction,
            "dtype": str(model.dtype).replace("torch.", ""), "device": str(model.device), "dataset": dataset.name,
            "data": cfg.dataset or dataset.source,
            "resolution": cfg.size, "crop": cfg.crop, "steps": cfg.steps, "sample_steps": cfg.sample_steps or cfg.steps,
            "spacing": sched.spacing, "guidance": cfg.guidance, "prompts": cfg.prompts, **sched.terminal()}


def safe_name(text: str) -> str:
    """A file name for ``text``; a short hash keeps names apart that only differ in replaced characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"
    return name if name == text else f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def assets_dir(store_path: str) -> str:
    """Folder of the PNGs (originals and reconstructions) next to the store."""
    return os.path.splitext(os.path.abspath(store_path))[0] + "_images"


def _peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    """Peak GPU memory allocated since the reset, or (CPU) the process's peak resident set so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def step_residuals(model, inv) -> list[float] | None:
    """Mean squared residual ||step(x_i) - x_{i+1}||^2 of every step of the inverted trajectory
    (index 0 = noisiest step): how well the sampler retraces the inversion, step by step.
    Methods with their own sampler or no trajectory fall back to residuals they recorded."""
    spec = get_method(inv.method)
    if inv.trajectory is None or spec.sample is not None:
        recorded = [s.get("residual") for s in sorted(inv.steps, key=lambda s: s.get("step", 0))]
        if recorded and all(r is not None for r in recorded):
            return [float(r[0] if isinstance(r, (list, tuple)) else r) for r in recorded]
        return None
    sched, cond = schedule_of(model, inv), condition_of(model, inv)
    with torch.no_grad():
        return [float((denoise_step(model, inv.trajectory[i], i, sched, cond, inv.state) - inv.trajectory[i + 1])
                      .pow(2).mean()) for i in range(len(sched))]


def _iterations(inv) -> float:
    total = 0
    for s in inv.steps:
        it = s.get("iters", 1)
        total += max(it) if isinstance(it, (list, tuple)) else it
    return float(total)


def _image_metrics(original, recon, lpips_net) -> dict:
    out = {"psnr": float(metrics.psnr(original, recon)[0]), "ssim": float(metrics.ssim(original, recon)[0]),
           "ms_ssim": float(metrics.ms_ssim(original, recon)[0])}
    out["lpips"] = float(lpips_net(original, recon)[0]) if lpips_net is not None else None
    out["psnr"] = out["psnr"] if out["psnr"] != float("inf") else 1e9  # identical images: SQLite has no inf
    return out


def _load_item(model, item, cfg: BenchConfig, todo, base: dict, store, summary: RunSummary, log):
    """The item's image on the model's device, or None once a failed row is written for each method left."""
    try:
        image = item.load(cfg.size, cfg.crop).to(model.device)
        model.check_size(*image.shape[-2:])
        return image
    except InversaError as exc:
        log(f"bench: {item.id} failed to load: {exc}")
        for m, h in todo:
            summary.failed += store.write({**base, "method": m, "config_hash": h, "status": "failed",
                                           "error": str(exc)})
        return None


def _method_row(model, image, prompt: str, method: str, chash: str, config: dict, cfg: BenchConfig, lpips_net,
                folder: str, store_path: str, row: dict, summary: RunSummary, log) -> dict:
    """``row`` with one method's figures and reconstruction (or its failure: one bad item must not stop the run)."""
    try:
        row.update(_one(model, image, prompt, method, cfg, lpips_net, config.get("decoder_inversion")))
        recon = row.pop("_recon")
        path = save_image(recon, os.path.join(folder, f"{safe_name(method)}-{chash[:8]}.png"))
        row.update(status="ok", recon=os.path.relpath(path, os.path.dirname(os.path.abspath(store_path))))
    except (KeyboardInterrupt, InversaError):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        log(f"bench: {row['image']} / {method} failed: {row['error']}\n{traceback.format_exc(limit=3)}")
        summary.failed += 1
    return row


def run(model, dataset: Dataset, store_path: str, cfg: BenchConfig, *, rank: int = 0, world: int = 1,
        lpips_net=None, log=None) -> RunSummary:
    """Benchmark this process's share of ``dataset``; rows already in the store are skipped."""
    from tqdm.auto import tqdm

    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_methods(cfg)
    cfg.dataset = cfg.dataset or dataset.source
    keys = cfg.keys(model)
    summary = RunSummary()
    assets = assets_dir(store_path)
    with Store(store_path) as store:
        proto = protocol(model, cfg, dataset)
        check_protocol(store, proto, store_path)
        for method, chash, config in keys:
            store.add_config(chash, method, config, proto if method not in CEILINGS else
                             {k: proto[k] for k in ("model", "family", "dtype", "device", *SHARED)})
        done = store.done()
        configs = {h: c for _, h, c in keys}
        for item in tqdm(dataset.items[rank::world], desc=f"bench[{rank}/{world}]", disable=None, unit="img"):
            todo = [(m, h) for m, h, _ in keys if (item.id, m, h) not in done]
            summary.skipped += len(keys) - len(todo)
            if not todo:
                continue
            folder = os.path.join(assets, safe_name(item.id))
            base = {"image": item.id, "caption": item.caption, "worker": rank}
            image = _load_item(model, item, cfg, todo, base, store, summary, log)
            if image is None:
                continue
            original = os.path.relpath(save_image(image, os.path.join(folder, "original.png")),
                                       os.path.dirname(os.path.abspath(store_path)))
            prompt = item.caption if cfg.prompts == "captions" else ""
            for m, h in todo:
                row = {**base, "method": m, "config_hash": h, "original": original}
                new = store.write(_method_row(model, image, prompt, m, h, configs[h], cfg, lpips_net, folder,
                                              store_path, row, summary, log))  # False: another worker wrote it
                summary.written += new
                summary.skipped += not new
    return summary


def _one(model, image, prompt: str, method: str, cfg: BenchConfig, lpips_net, decoder: dict | None = None) -> dict:
    """Metrics of one image under one method (plus the reconstruction under ``_recon``);
    ``decoder``: options of the decoder inversion stage, None without it."""
    _peak_reset(model.device)
    start = time.perf_counter()
    if method in CEILINGS:
        from inversa.models.decoder import invert_decoder

        with torch.no_grad():
            z0 = model.encode(image)
        if method == DECODER_ROW:
            z0 = invert_decoder(model, image, z0, **decoder).z
        with torch.no_grad():
            recon = model.decode(z0)
        seconds = time.perf_counter() - start
        out = _image_metrics(image, recon, lpips_net)
        out.update(latent_mse=None, seconds=seconds, total_seconds=seconds, nfe=0.0, iters=0.0,
                   peak_mem_mb=_peak_mb(model.device), residuals=None, _recon=recon)
        return out
    inv = invert(model, image, prompt, method=method, steps=cfg.steps, guidance=cfg.guidance, negative="",
                 spacing=cfg.spacing, keep_trajectory=True, decoder_inversion=False if decoder is None else decoder,
                 **cfg.options.get(method, {}))
    z_hat = reconstruct(model, inv, steps=cfg.sample_steps, decode=False)
    recon = model.decode(z_hat)
    total_seconds = time.perf_counter() - start  # invert + reconstruct + decode, not the diagnostics below
    out = _image_metrics(image, recon, lpips_net)
    residuals = step_residuals(model, inv)
    out.update(latent_mse=float(metrics.latent_mse(inv.z0, z_hat)[0]), seconds=float(inv.stats["seconds"] + inv.stats.get("decoder_seconds", 0.0)),
               total_seconds=total_seconds, nfe=float(inv.stats["nfe"]), iters=_iterations(inv),
               peak_mem_mb=_peak_mb(model.device), residuals=residuals, _recon=recon)
    return out
