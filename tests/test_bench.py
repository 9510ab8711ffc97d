"""Benchmark harness: metrics, datasets, resumable store, data-parallel runs, HTML report in Chromium."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from inversa import InversaError
from inversa.core.metrics import LPIPS, load_lpips, ms_ssim, ms_ssim_scales, ssim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("seconds", "total_seconds", "peak_mem_mb", "finished", "worker")


def _env():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), TQDM_DISABLE="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")
    return env


def test_ms_ssim_scale_rule_and_values():
    assert [ms_ssim_scales(s, s) for s in (16, 32, 64, 256)] == [1, 2, 3, 5]
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2))
    assert torch.allclose(ms_ssim(x, y, scales=1), ssim(x, y), atol=1e-6)  # one scale is SSIM
    assert (ms_ssim(x, y) < 1).all() and (ms_ssim(x, y) > 0).all()


def test_lpips_loads_local_weights_and_reports_bad_files(tmp_path):
    torch.manual_seed(0)
    net = LPIPS()
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    state.update({f"lin{i}.model.1.weight": lin.weight.abs() for i, lin in enumerate(net.lins)})
    torch.save(state, tmp_path / "alex_lpips.pth")
    loaded = load_lpips(str(tmp_path / "alex_lpips.pth"))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert float(loaded(x, x)) == 0.0
    assert float(loaded(x, -x)) > 0
    torch.save({"lin0.model.1.weight": state["lin0.model.1.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(InversaError, match="lack"):
        load_lpips(str(tmp_path / "partial.pth"))
    with pytest.raises(InversaError, match="do not exist"):
        load_lpips(str(tmp_path / "nothing.pth"))


def test_captions_coco_and_text(tmp_path):
    from inversa.bench.datasets import open_dataset, read_captions

    coco = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "b.png"}],
            "annotations": [{"image_id": 7, "caption": "a red square"}, {"image_id": 7, "caption": "second"},
                            {"image_id": 8, "caption": "a blue disc"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert read_captions(str(tmp_path / "coco.json")) == {"a.png": "a red square", "b.png": "a blue disc"}
    (tmp_path / "caps.txt").write_text("# comment\na.png\tred\nb|blue\n")
    assert read_captions(str(tmp_path / "caps.txt")) == {"a.png": "red", "b": "blue"}
    d = tmp_path / "imgs"
    d.mkdir()
    from PIL import Image

    Image.new("RGB", (80, 40), (255, 0, 0)).save(d / "a.png")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(d / "b.png")
    ds = open_dataset(str(d), str(tmp_path / "coco.json"))
    assert [(i.id, i.caption) for i in ds.items] == [("a.png", "a red square"), ("b.png", "a blue disc")]
    x = ds.items[0].load(32, "center")
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x[0, 0], torch.ones(32, 32))
    with pytest.raises(InversaError, match="unknown built-in dataset 'nope'; available: photos, shapes"):
        open_dataset("builtin:nope")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Two tiny real photos and one corrupt file."""
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("bench_data")
    Image.fromarray(data.astronaut()).resize((64, 64)).save(d / "astronaut.png")
    Image.fromarray(data.coffee()).resize((96, 64)).save(d / "coffee.png")
    (d / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (d / "captions.txt").write_text("astronaut.png\tan astronaut\ncoffee.png\ta cup of coffee\n")
    return str(d)


def _bench_args(pipe, data, out):
    return ["bench", "-m", pipe, "--methods", "ddim,fixed_point", "--data", data, "--steps", "2",
            "--opt", "fixed_point:iters=3", "-o", out]


def _rows(path):
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM results ORDER BY image, method, config_hash")]
    db.close()
    return rows


@pytest.fixture(scope="module")
def one_process_store(pipeline_dir, dataset_dir, tmp_path_factory):
    from inversa.cli.main import main

    out = str(tmp_path_factory.mktemp("bench1") / "results.sqlite")
    assert main(_bench_args(pipeline_dir("sd"), dataset_dir, out)) == 0
    return out


def test_one_row_per_item_corrupt_recorded(one_process_store):
    rows = _rows(one_process_store)
    assert len(rows) == 3 * 3  # 3 files x (vae_roundtrip, ddim, fixed_point)
    assert len({(r["image"], r["method"], r["config_hash"]) for r in rows}) == 9
    bad = [r for r in rows if r["image"] == "zz_corrupt.png"]
    assert all(r["status"] == "failed" and "corrupt" in r["error"] for r in bad)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6
    assert all(r["ms_ssim"] is not None and r["lpips"] is None for r in ok)
    fp = [r for r in ok if r["method"] == "fixed_point"]
    assert all(r["nfe"] >= 2 and r["iters"] >= 2 and len(json.loads(r["residuals"])) == 2 for r in fp)
    vae = [r for r in ok if r["method"] == "vae_roundtrip"]
    assert all(r["nfe"] == 0 and r["latent_mse"] is None for r in vae)
    base = os.path.dirname(one_process_store)
    assert all(os.path.isfile(os.path.join(base, r["recon"])) for r in ok)


def test_killed_run_resumes_without_redoing(pipeline_dir, dataset_dir, tmp_path):
    out = str(tmp_path / "results.sqlite")
    cmd = [sys.executable, "-m", "inversa", *_bench_args(pipeline_dir("sd"), dataset_dir, out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    first = []
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(out):
            try:
                first = _rows(out)
            except sqlite3.OperationalError:
                first = []
            if first:
                break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    first = _rows(out)
    assert 0 < len(first) < 9  # killed midway
    subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = _rows(out)
    keys = [(r["image"], r["method"], r["config_hash"]) for r in rows]
    assert len(rows) == 9 and len(set(keys)) == 9
    after = {(r["image"], r["method"], r["config_hash"]): r["finished"] for r in rows}
    for r in first:  # finished rows were kept, not recomputed
        assert after[(r["image"], r["method"], r["config_hash"])] == r["finished"]


def _same_rows(rows_a, rows_b):
    """Equal up to float noise from different thread counts; timings, workers and paths excluded."""
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b):
        for k in a:
            if k in TIMING or k in ("recon", "original"):
                continue
            va, vb = a[k], b[k]
            if k == "residuals" and va is not None:
                va, vb = json.loads(va), json.loads(vb)
            if isinstance(va, (float, list)):
                assert va == pytest.approx(vb, rel=1e-4, abs=1e-7), (a["image"], a["method"], k)
            else:
                assert va == vb, (a["image"], a["method"], k)


@pytest.mark.slow
def test_two_process_accelerate_equals_one_process(pipeline_dir, dataset_dir, one_process_store, tmp_path):
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    if not os.path.exists(accelerate):
        pytest.skip("accelerate launcher not installed")
    out = str(tmp_path / "results.sqlite")
    # On CPU, accelerate's --cpu launcher starts one process; --multi_gpu goes through torchrun and
    # our PartialState(cpu=True) then uses gloo, so this command works with and without GPUs.
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "inversa",
           *_bench_args(pipeline_dir("sd"), dataset_dir, out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows2, rows1 = _rows(out), _rows(one_process_store)
    assert {r["worker"] for r in rows2} == {0, 1}
    _same_rows(rows2, rows1)
    from inversa.bench.report import table
    from inversa.bench.store import Store

    with Store(out) as s2, Store(one_process_store) as s1:
        t1, t2 = table(s1.rows(), s1.configs()), table(s2.rows(), s2.configs())
    keys = ("method", "config_hash", "ok", "failed", "psnr", "ssim", "ms_ssim", "latent_mse", "nfe", "iters")
    for a, b in zip(t1, t2):
        for k in keys:
            va, vb = a[k], b[k]
            if isinstance(va, tuple):
                assert va == pytest.approx(vb, rel=1e-4, abs=1e-6), k
            else:
                assert va == vb, k


@pytest.mark.slow
def test_report_renders_in_headless_chromium(one_process_store, tmp_path):
    from inversa.cli.main import main

    out = str(tmp_path / "report")
    assert main(["report", one_process_store, "-o", out]) == 0
    md = open(os.path.join(out, "report.md")).read()
    assert "| vae_roundtrip |" in md and "| ddim |" in md and "| fixed_point (iters=3) |" in md
    assert "resolution** 64" in md and "crop** center" in md and "alpha_T" in md
    for plot in ("psnr_vs_time.png", "residuals.png"):
        assert os.path.getsize(os.path.join(out, plot)) > 1000
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium)")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000", "--dump-dom",
           "file://" + os.path.join(out, "index.html")]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    import re

    m = re.search(r'id="image-check"[^>]*', dom)
    assert m, dom[-2000:]
    tag = m.group(0)
    total = int(re.search(r'data-total="(\d+)"', tag).group(1))
    assert 'data-missing="0"' in tag, dom[-2000:]
    # 2 plots + 2 images x (original + 3 x (reconstruction + error map)); the corrupt file shows as failed
    assert total == 2 + 2 * 7
    assert "zz_corrupt.png" in dom and "failed" in dom
