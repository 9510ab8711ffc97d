"""``inversa bench --task edit``: editing methods over a PIE-Bench folder, one store row per edit.

Rows go to the table ``edit_results`` of the same SQLite store as the reconstruction task
(configs share its ``configs`` table), written as each edit finishes, so a rerun skips
what is there. Metrics follow PIE-Bench's evaluation at the model's resolution (stated
in the protocol): background PSNR / MSE / SSIM of both images times ``1 - mask``, values
in [0, 1]. LPIPS (SqueezeNet), DINO structure distance and CLIP scores come from
:mod:`.learned_metrics` when the user gives local weights, and are reported as skipped
otherwise. Sets with the truth (the PIE-format shapes set) also get an edit success per edit.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from inversa.bench.learned_metrics import SOURCES, Learned
from inversa.bench.pie import EDIT_TYPES, PieItem, background_metrics, load_pie
from inversa.bench.runner import VAE_ROW  # the same ceiling row as the reconstruction task
from inversa.bench.store import Store, config_hash
from inversa.core.errors import InversaError
from inversa.editing.options import method_options
from inversa.editing.recipes import RECIPES

BLEND = ("words", "mask", "none")
LEARNED_HEADS = {"lpips": ("bg LPIPS x1e3", 1e3), "structure": ("structure x1e3", 1e3),
                 "clip_whole": ("CLIP whole", 1.0), "clip_edited": ("CLIP edited", 1.0)}
LEARNED = tuple(LEARNED_HEADS)
METRICS = ("bg_psnr", "bg_mse", "bg_ssim", *LEARNED, "success", "seconds", "nfe")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS edit_results (
    image TEXT NOT NULL, method TEXT NOT NULL, config_hash TEXT NOT NULL, edit_type TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, {", ".join(f"{m} REAL" for m in METRICS)}, finished REAL NOT NULL,
    PRIMARY KEY (image, method, config_hash));
"""


def editing_methods(model) -> list[str]:
    """Every method ``inversa edit`` accepts on ``model``: registered ones (flow-only ones on flow models), recipes."""
    from inversa.methods import available, get_method

    flow = model.prediction == "flow"
    return (sorted(n for n in available() if flow or not get_method(n).flow_only)
            + [n for n, r in RECIPES.items() if r.fits(model)])


def _open_table(store: Store) -> None:
    """Create ``edit_results``, adding the columns a store written by an older inversa lacks."""
    store.db.executescript(SCHEMA)
    have = {r[1] for r in store.db.execute("PRAGMA table_info(edit_results)")}
    for m in METRICS:
        if m not in have:
            store.db.execute(f"ALTER TABLE edit_results ADD COLUMN {m} REAL")


@dataclass
class EditConfig:
    """What defines an edit row besides the item (hashed into its key)."""

    methods: list[str]
    steps: int = 10
    guidance: float = 7.5
    cross_replace: float = 0.4
    blend: str = "words"  # the blended words' attention, PIE's mask, or no local blend
    size: int = 64
    options: dict[str, dict] = field(default_factory=dict)

    def keys(self, model, dataset: str) -> list[tuple[str, str, dict]]:
        base = {"task": "edit", "model": model.name, "dtype": str(model.dtype).replace("torch.", ""),
                "size": self.size, "dataset": dataset}
        out = [(VAE_ROW, config_hash({"method": VAE_ROW, **base}), {"method": VAE_ROW, **base})]
        for m in self.methods:
            cfg = {"method": m, **base, "steps": self.steps, "guidance": self.guidance,
                   "cross_replace": self.cross_replace, "blend": self.blend, "options": self.options.get(m, {})}
            out.append((m, config_hash(cfg), cfg))
        return out


def success(item: PieItem, edited: torch.Tensor, size: int) -> float | None:
    """Did the edit happen? Only for items that carry their truth (``x_kind``, the shapes set)."""
    from inversa.tiny import shapes as S

    kind = item.extra.get("x_kind")
    if kind is None:
        return None
    target = S.parse_caption(item.extra["x_target_caption"])
    old, new = (item.mask(size, k)[0, 0].numpy() > 0 for k in ("x_source_mask", "x_target_mask"))
    rgb = ((edited[0].double().cpu() + 1) / 2).permute(1, 2, 0).numpy()
    palette = {name: np.asarray(c, np.float64) / 255 for name, c in S.COLOURS.items()}

    def nearest(region) -> str:
        median = np.median(rgb[region], axis=0)
        return min(palette, key=lambda c: float(np.sum((median - palette[c]) ** 2)))

    if kind == "colour":
        inner = ~S.dilate(~new, 1)
        return float(nearest(inner if inner.any() else new) == target.colour)
    if kind == "background":
        return float(nearest(~S.dilate(old | new, 3)) == target.bg_colours[0])
    obj = (np.sum((rgb - palette[target.colour]) ** 2, -1) < 0.1) & S.dilate(old | new, 4)
    return float(S.iou(obj, new) > S.iou(obj, old))


def _one(model, item: PieItem, image, method: str, cfg: EditConfig, learned: Learned) -> dict:
    from inversa.editing.edit import edit

    mask = item.mask(cfg.size).to(image.device)
    model.nfe, start = 0, time.perf_counter()
    if method == VAE_ROW:
        with torch.no_grad():
            edited = model.decode(model.encode(image))
    else:
        blend = {"words": {"blend": " ".join(item.blended_words)} if len(item.blended_words) == 2 else {},
                 "mask": {"mask": mask}, "none": {}}["none" if method in RECIPES else cfg.blend]
        edited = edit(model, image, item.source_prompt, item.target_prompt, method=method, steps=cfg.steps,
                      guidance=cfg.guidance, cross_replace=cfg.cross_replace, **blend, **cfg.options.get(method, {}))
    seconds = time.perf_counter() - start
    out = {**background_metrics(image, edited, mask), **learned.scores(image, edited, mask, item.target_prompt),
           "seconds": seconds, "nfe": model.nfe}  # network rows per edit
    out["success"] = None if method == VAE_ROW else success(item, edited, cfg.size)
    return out


def run(model, folder: str, store_path: str, cfg: EditConfig, limit: int | None = None, log=None,
        learned: Learned | None = None) -> tuple[int, int]:
    """Edit every item with every method; returns (rows written, rows already there)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    learned = learned or Learned()
    if cfg.blend not in BLEND:
        raise InversaError(f"--blend must be one of {', '.join(BLEND)}, not {cfg.blend!r}")
    for m in cfg.methods:  # misspelt methods or options stop the run before any work
        cfg.options[m] = method_options(m, cfg.options.get(m, {}))
    items = load_pie(folder, limit)
    keys = cfg.keys(model, os.path.basename(os.path.normpath(folder)))
    written = skipped = 0
    with Store(store_path) as store:
        _open_table(store)
        proto = {"task": "edit", "dataset": folder, "resolution": cfg.size, "device": str(model.device)}
        for method, chash, config in keys:
            store.add_config(chash, method, config, proto)
        done = {tuple(r) for r in store.db.execute("SELECT image, method, config_hash FROM edit_results")}
        for item in items:
            todo = [(m, h) for m, h, _ in keys if (item.id, m, h) not in done]
            skipped += len(keys) - len(todo)
            if not todo:
                continue
            image = item.load(cfg.size).to(model.device)
            for method, chash in todo:
                row = {"image": item.id, "method": method, "config_hash": chash, "edit_type": item.edit_type}
                try:
                    row.update(_one(model, item, image, method, cfg, learned), status="ok")
                except Exception as exc:  # noqa: BLE001 - a bad edit, or a method that cannot edit, must not stop the run
                    row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    log(f"bench: {item.id} / {method} failed: {row['error']}")
                columns = ("image", "method", "config_hash", "edit_type", "status", "error", *METRICS)
                store.db.execute(f"INSERT OR IGNORE INTO edit_results ({', '.join(columns)}, finished) "
                                 f"VALUES ({', '.join('?' * len(columns))}, ?)",
                                 [row.get(c) for c in columns] + [time.time()])
                written += 1
    return written, skipped


def table(store_path: str) -> str:
    """Markdown: per method and config, PIE's background metrics and the success rate, overall and per edit type."""
    with Store(store_path) as store:
        _open_table(store)
        rows = [dict(r) for r in store.db.execute("SELECT * FROM edit_results WHERE status = 'ok'")]
        failed = store.db.execute("SELECT method, COUNT(*), MIN(error) FROM edit_results WHERE status != 'ok' "
                                  "GROUP BY method").fetchall()
        configs = store.configs()
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["config_hash"]), []).append(r)
    types = sorted({r["edit_type"] for r in rows})
    learned = [m for m in LEARNED if any(r[m] is not None for r in rows)]
    head = ["method", "blend", "edits", "bg PSNR dB", "bg MSE x1e3", "bg SSIM",
            *(LEARNED_HEADS[m][0] for m in learned), "success", "s/edit", "NFE/edit"]
    head += [f"{EDIT_TYPES.get(t, t)}: PSNR / success" for t in types]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(rs, key, fmt, scale=1.0):
        vals = [r[key] for r in rs if r[key] is not None]
        return fmt.format(scale * float(np.mean(vals))) if vals else "-"

    for (method, chash), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != VAE_ROW, kv[0])):
        cfg = configs.get(chash, {}).get("config", {})
        cells = [method, cfg.get("blend", "-"), str(len(rs)), cell(rs, "bg_psnr", "{:.2f}"),
                 cell(rs, "bg_mse", "{:.2f}", 1e3), cell(rs, "bg_ssim", "{:.3f}"),
                 *(cell(rs, m, "{:.2f}", LEARNED_HEADS[m][1]) for m in learned), cell(rs, "success", "{:.0f}%", 100),
                 cell(rs, "seconds", "{:.2f}"), cell(rs, "nfe", "{:.0f}")]
        for t in types:
            per = [r for r in rs if r["edit_type"] == t]
            cells.append(f"{cell(per, 'bg_psnr', '{:.2f}')} / {cell(per, 'success', '{:.0f}%', 100)}")
        lines.append("| " + " | ".join(cells) + " |")
    some = next((c for c in configs.values() if c["config"].get("task") == "edit" and c["method"] != VAE_ROW), None)
    notes = ""
    if some:
        c = some["config"]
        notes = (f"model {c['model']}, {c['dtype']}, {c['size']}x{c['size']} (PIE evaluates at 512), steps {c['steps']}, "
                 f"guidance {c['guidance']}, cross_replace {c['cross_replace']}, dataset {c['dataset']}\n\n")
    absent = [k for k in SOURCES if not any(m.startswith(k) for m in learned)]
    skipped = "; ".join(f"{k} skipped (no weights: {SOURCES[k][1]} or {SOURCES[k][0]})" for k in absent)
    failures = "".join(f"\n\n{m}: {k} edits failed ({err})" for m, k, err in failed)
    return notes + "\n".join(lines) + failures + (f"\n\n{skipped}.\n" if skipped else "\n")
