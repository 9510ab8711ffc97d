"""Report of a results store: Markdown table, static HTML page with a gallery and matplotlib plots."""
from __future__ import annotations

import html
import json
import math
import os
import shutil
from statistics import mean, pstdev

from inversa.bench.runner import CEILINGS, assets_dir, safe_name
from inversa.bench.store import METRICS, Store

COLUMNS = (("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"),
           ("latent_mse", "latent MSE", "{:.3e}"), ("lpips", "LPIPS", "{:.4f}"), ("seconds", "time s", "{:.3f}"),
           ("nfe", "NFE", "{:.1f}"), ("iters", "iters", "{:.1f}"), ("peak_mem_mb", "peak MB", "{:.0f}"))
TIMING = ("seconds", "total_seconds", "peak_mem_mb")


def _number(value):
    """A finite number, or None (text, NaN, inf and blobs are no metric)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _json(text, kind):
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, kind) else None


def read_store(path: str) -> tuple[list[dict], dict, list[str]]:
    """Rows and configs of a store, each damaged cell turned into a placeholder (None, {}) with a note.

    A store is data from a run (or a hand): a text PSNR, a residuals column that is not
    a list of finite numbers or a config that is not JSON must not crash the report.
    """
    notes: list[str] = []

    def note(where: str, column: str, value) -> None:
        notes.append(f"store {path}: {where} {column} {value!r:.40} is damaged; shown as '-'")

    import sqlite3

    from inversa.core.errors import InversaError

    with Store(path) as store:
        try:
            raw = [dict(r) for r in store.db.execute("SELECT * FROM results ORDER BY method, config_hash, image")]
            raw_configs = [dict(r) for r in store.db.execute("SELECT * FROM configs")]
        except sqlite3.DatabaseError as exc:
            raise InversaError(f"results store {path} is damaged ({exc})") from None
    rows = []
    for r in raw:
        where = f"row {str(r.get('image'))[:40]}/{str(r.get('method'))[:40]}"
        row = {k: (v if isinstance(v, (str, type(None))) else str(v)) for k, v in r.items()
               if k in ("image", "method", "config_hash", "status", "error", "original", "recon", "caption")}
        for k in ("image", "method", "config_hash", "status"):
            row[k] = row.get(k) or ""
        for key in METRICS:
            row[key] = _number(r.get(key))
            if r.get(key) is not None and row[key] is None:
                note(where, key, r.get(key))
        residuals = _json(r.get("residuals"), list) if r.get("residuals") else None
        if residuals is not None and not all(_number(v) is not None for v in residuals):
            residuals = None
        if r.get("residuals") and residuals is None:
            note(where, "residuals", r.get("residuals"))
        row["residuals"] = residuals
        rows.append(row)
    configs = {}
    for c in raw_configs:
        chash = str(c.get("config_hash"))
        entry = {"method": str(c.get("method")), "config": _json(c.get("config"), dict),
                 "protocol": _json(c.get("protocol"), dict)}
        for key in ("config", "protocol"):
            if entry[key] is None:
                note(f"config {chash[:12]}", key, c.get(key))
                entry[key] = {}
        configs[chash] = entry
    return rows, configs, notes


def table(rows: list[dict], configs: dict) -> list[dict]:
    """One summary per (method, config): counts and mean/std of each metric (None when absent)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["config_hash"]), []).append(r)
    out = []
    for (method, chash), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] not in CEILINGS, kv[0])):
        ok = [r for r in rs if r["status"] == "ok"]
        entry = {"method": method, "config_hash": chash, "images": len(rs), "ok": len(ok),
                 "failed": len(rs) - len(ok), "config": configs.get(chash, {}).get("config", {})}
        for key, _, _ in COLUMNS:
            vals = [r[key] for r in ok if r[key] is not None]
            entry[key] = (mean(vals), pstdev(vals)) if vals else None
        out.append(entry)
    return out


def _label(entry: dict) -> str:
    opts = entry["config"].get("options") or {}
    opts = opts if isinstance(opts, dict) else {"options": opts}
    extra = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
    decoder = " + decoder inversion" if "decoder_inversion" in entry["config"] and entry["method"] not in CEILINGS else ""
    return entry["method"] + decoder + (f" ({extra})" if extra else "")


def markdown(entries: list[dict], configs: dict) -> str:
    """The results table headed by the protocol the configs recorded."""
    protocols = [c["protocol"] for c in configs.values() if c["method"] not in CEILINGS]
    protocol = dict(protocols[0]) if protocols else {}
    lines = ["# inversa benchmark", ""]
    keys = ("model", "dataset", "resolution", "crop", "steps", "sample_steps", "spacing", "t_T", "alpha_T",
            "sigma_T", "guidance", "prompts", "dtype", "device")
    for k in keys:  # the header states one value only where every config shares it
        if len({repr(p.get(k)) for p in protocols}) > 1:
            protocol[k] = "varies by config"
    lines.append("; ".join(f"**{k}** {protocol[k]:.4g}" if isinstance(protocol.get(k), float) and k != "guidance"
                           else f"**{k}** {protocol.get(k)}" for k in keys if k in protocol))
    lines += ["", "| method | config | ok/failed | " + " | ".join(c[1] for c in COLUMNS) + " |",
              "|---|---|---|" + "---|" * len(COLUMNS)]
    for e in entries:
        cells = []
        for key, _, fmt in COLUMNS:
            v = e[key]
            cells.append("-" if v is None else fmt.format(v[0]) + (f" ± {fmt.format(v[1])}" if e["ok"] > 1 and
                                                                     key in ("psnr", "ssim", "ms_ssim") else ""))
        lines.append(f"| {_label(e)} | {e['config_hash'][:8]} | {e['ok']}/{e['failed']} | " + " | ".join(cells) + " |")
    lines += ["", "vae_roundtrip = decode(encode(x)): the ceiling of any inversion of E(x); vae_decoder_inverted = "
              "decode(z) with z fitted to the image (inversa.models.decoder), the ceiling with --decoder-inversion. Times are inversion wall "
              "time per image; peak MB is GPU peak allocation, or on CPU the process's peak resident set."]
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict], entries: list[dict], out: str, stage) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        rs = [r for r in rows if r["config_hash"] == e["config_hash"] and r["status"] == "ok"
              and r["seconds"] is not None and r["psnr"] is not None]
        ax.scatter([r["seconds"] for r in rs], [min(r["psnr"], 99) for r in rs], label=_label(e), alpha=0.7)
    ax.set_xlabel("inversion time per image (s)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("PSNR vs time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stage(os.path.join(out, "psnr_vs_time.png")), dpi=90)
    plt.close(fig)
    made.append("psnr_vs_time.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        res = [r["residuals"] for r in rows if r["config_hash"] == e["config_hash"] and r["residuals"]]
        if not res:
            continue
        n = min(len(x) for x in res)
        curve = [mean(x[i] for x in res) for i in range(n)]
        ax.plot(range(n), [max(c, 1e-30) for c in curve], marker="o", label=_label(e))
    ax.set_yscale("log")
    ax.set_xlabel("step (0 = noisiest)")
    ax.set_ylabel("mean squared residual")
    ax.set_title("per-step residual ||step(x_i) - x_{i+1}||²")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stage(os.path.join(out, "residuals.png")), dpi=90)
    plt.close(fig)
    made.append("residuals.png")
    return made


def _pixels(path: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


def _error_map(original, recon, path: str) -> None:
    """|original - reconstruction| averaged over channels, magma colour map, scaled to [0, 0.5]."""
    import matplotlib
    import numpy as np
    from PIL import Image

    err = np.clip(np.abs(original - recon).mean(2) / 0.5, 0, 1)
    rgb = (matplotlib.colormaps["magma"](err)[..., :3] * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(path)


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, missing = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { missing.push(imgs[i].getAttribute('src')); }
  }
  var el = document.getElementById('image-check');
  el.setAttribute('data-total', imgs.length);
  el.setAttribute('data-missing', missing.length);
  el.textContent = missing.length ? ('missing images: ' + missing.join(', ')) : ('all ' + imgs.length + ' images loaded');
});
</script>"""


def stored_image(store_path: str, rel) -> str | None:
    """The file a row names, only if it is a file inside the store's own images folder (else None).

    A store is data: a path in it that leads elsewhere (``/etc/...``, ``../``, a link
    out) must not make a report read and publish that file.
    """
    if not isinstance(rel, str) or not rel:
        return None
    root = os.path.realpath(assets_dir(store_path))
    path = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(store_path)), rel))
    return path if os.path.commonpath([path, root]) == root and os.path.isfile(path) else None


def _copy_image(src: str | None, dst: str, stage):
    """Copy a stored PNG into the gallery; its pixels, or None when it is missing or not an image."""
    if src is None:
        return None
    try:
        pixels = _pixels(src)
    except Exception:  # noqa: BLE001 - any image PIL cannot read (bombs, truncation) is a placeholder
        return None
    shutil.copyfile(src, stage(dst))
    return pixels


def _placeholder(label: str) -> str:
    return (f"<figure class='failed'><figcaption>{html.escape(label)}: image not found in the store"
            "</figcaption></figure>")


def _gallery_row(store_path: str, image: str, entries: list[dict], by_key: dict, gallery_dir: str, stage) -> str:
    """One image's gallery row: original, then each method's reconstruction and error map."""
    first = next((by_key.get((image, e["config_hash"])) for e in entries
                  if by_key.get((image, e["config_hash"]), {}).get("original")), None)
    if first is None:
        err = next((by_key[(image, e["config_hash"])]["error"] for e in entries
                    if (image, e["config_hash"]) in by_key), "")
        return f"<h3>{html.escape(image)}</h3><p class='failed'>failed: {html.escape(str(err))}</p>"
    stem = safe_name(image)
    original = _copy_image(stored_image(store_path, first["original"]),
                           os.path.join(gallery_dir, f"{stem}__original.png"), stage)
    if original is None:
        return f"<h3>{html.escape(image)}</h3><div class='row'>{_placeholder('original')}</div>"
    cells = [f"<figure><img src='gallery/{stem}__original.png' alt='original'><figcaption>original"
             f"</figcaption></figure>"]
    for e in entries:
        r = by_key.get((image, e["config_hash"]))
        if r is None or r["status"] != "ok":
            cells.append(f"<figure class='failed'><figcaption>{html.escape(_label(e))}: "
                         f"{'failed' if r else 'not run'}</figcaption></figure>")
            continue
        name = f"{stem}__{safe_name(e['method'])}-{e['config_hash'][:8]}"
        recon = _copy_image(stored_image(store_path, r["recon"]), os.path.join(gallery_dir, name + ".png"), stage)
        if recon is None or recon.shape != original.shape:
            cells.append(_placeholder(_label(e)))
            continue
        _error_map(original, recon, stage(os.path.join(gallery_dir, name + "_error.png")))
        psnr = "-" if r["psnr"] is None else "identical" if r["psnr"] >= 1e8 else f"{r['psnr']:.2f} dB"
        cells.append(f"<figure><img src='gallery/{name}.png' alt='reconstruction'>"
                     f"<img src='gallery/{name}_error.png' alt='error map'>"
                     f"<figcaption>{html.escape(_label(e))}<br>{psnr}</figcaption></figure>")
    return f"<h3>{html.escape(image)}</h3><div class='row'>{''.join(cells)}</div>"


def write_report(store_path: str, out: str, max_images: int = 12) -> dict:
    """Write ``report.md``, ``index.html``, plots and gallery PNGs into ``out``; returns paths and the table."""
    from inversa.core.errors import InversaError
    from inversa.io.outputs import staged

    if not os.path.isfile(store_path):
        raise InversaError(f"results store {store_path} does not exist")
    rows, configs, notes = read_store(store_path)
    if not rows:
        raise InversaError(f"results store {store_path} has no rows")
    if any(r["original"] for r in rows) and not os.path.isdir(assets_dir(store_path)):
        raise InversaError(f"the images of store {store_path} are missing: move {os.path.basename(assets_dir(store_path))}"
                           " (next to the store) along with it")
    entries = table(rows, configs)
    md = markdown(entries, configs)
    gallery_dir = os.path.join(out, "gallery")
    images = sorted({r["image"] for r in rows})[:max_images]
    by_key = {(r["image"], r["config_hash"]): r for r in rows}
    with staged() as stage:  # the report's files appear together
        with open(stage(os.path.join(out, "report.md")), "w", encoding="utf-8") as f:
            f.write(md)
        plots = _plots(rows, entries, out, stage)
        parts = [_gallery_row(store_path, image, entries, by_key, gallery_dir, stage) for image in images]
        with open(stage(os.path.join(out, "index.html")), "w", encoding="utf-8") as f:
            f.write(_page(_md_table_to_html(md), plots, parts, notes))
    return {"markdown": os.path.join(out, "report.md"), "html": os.path.join(out, "index.html"),
            "plots": plots, "table": entries, "text": md, "notes": notes}


def _page(table_html: str, plots: list[str], parts: list[str], notes: list[str] = ()) -> str:
    damaged = "".join(f"<p class='failed'>note: {html.escape(n)}</p>" for n in dict.fromkeys(notes))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>inversa benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}} .row{{display:flex;flex-wrap:wrap;gap:8px}}
figure{{margin:0;text-align:center;font-size:12px}} figure img{{width:128px;height:128px;image-rendering:pixelated;
display:block}} .failed{{color:#b00}} .plots img{{max-width:48%}}</style></head>
<body>
{damaged}{table_html}
<div class="plots"><h2>Plots</h2>{''.join(f"<img src='{p}' alt='{p}'>" for p in plots)}</div>
<h2>Gallery</h2><p>Per image: original, then per method the reconstruction above its error map
(|original - reconstruction|, channel mean, magma colour map saturating at 0.5).</p>
{''.join(parts)}
<p id="image-check" data-missing="unknown">image check pending</p>
{CHECK_SCRIPT}
</body></html>
"""


def _md_table_to_html(md: str) -> str:
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(cells[0]) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if line.startswith("# "):
                out.append(f"<h1>{html.escape(line[2:])}</h1>")
            elif line:
                out.append("<p>" + html.escape(line).replace("**", "") + "</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)
