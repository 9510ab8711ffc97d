"""The hard-regime benchmark's quick mode runs and writes its table and one plot per case."""
import importlib.util
import json
import os

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench():
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "hard_regime.py")
    spec = importlib.util.spec_from_file_location("hard_regime", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_quick_oracle_run_writes_results(tmp_path):
    bench = _bench()
    out = str(tmp_path / "hard")
    assert bench.main(["--quick", "--families", "oracle", "--out", out]) == 0
    rows = json.load(open(out + ".json"))["rows"]
    cases = {r["case"] for r in rows}
    assert len(cases) == 6 and all(os.path.exists(f"{out}-{c.replace(' ', '_')}.png") for c in cases)
    default = [r for r in rows if r["method"] == "preciseinv hybrid (default)"]
    assert {"eta" in r["config"] for r in default} == {True, False}  # also stopped at the paper's eta
    assert max(r["xT_err"] for r in default if not r["config"]) <= 1e-6  # exact at the defaults
    text = open(out + ".md").read()
    assert "## Verdict" in text and "--quick --families oracle" in text and "oracle 2" in text
    verdicts = [line for line in text.splitlines() if line.startswith("| oracle-")][:len(cases)]
    assert len(verdicts) == len(cases) and all(line.endswith(("**yes** |", "**NO** |")) for line in verdicts)
    # --render rewrites the report from the json alone, figures included, with the stored command and load
    for suffix in [".md", *(f"-{c.replace(' ', '_')}.png" for c in cases)]:
        os.remove(out + suffix)
    assert bench.main(["--render", "--out", out]) == 0
    assert open(out + ".md").read() == text and all(os.path.exists(f"{out}-{c.replace(' ', '_')}.png") for c in cases)


def test_a_time_budget_keeps_the_cases_already_done(tmp_path):
    """Results are written after every case, so a bounded run still leaves a complete table of what it ran."""
    out = str(tmp_path / "hard")
    assert _bench().main(["--quick", "--families", "oracle", "--minutes", "1e-9", "--out", out]) == 0
    rows = json.load(open(out + ".json"))["rows"]
    assert {r["case"] for r in rows} == {"oracle-epsilon w1 2 steps"}
    assert os.path.exists(f"{out}-oracle-epsilon_w1_2_steps.png") and "oracle-epsilon w1 2 steps" in open(out + ".md").read()


def test_verdict_takes_the_fastest_default_run_that_holds_on_the_curve():
    def row(method, cap, mse, s):
        return {"case": "c", "method": method, "cap": cap, "latent_mse": mse, "seconds": s}

    paper = row("preciseinv paper", 100, 1e-3, 10.0)
    anderson = [row("fixed_point anderson", 5, 1e-2, 1.0), row("fixed_point anderson", 50, 1e-4, 8.0)]
    curve = [row("preciseinv hybrid (default)", 3, 5e-4, 3.0), row("preciseinv hybrid (default)", 10, 1e-6, 4.0),
             row("preciseinv hybrid (default)", 40, 1e-9, 9.0)]
    v, = _bench().verdict([paper, *anderson, *curve])
    assert v["ours"]["cap"] == 3 and v["anderson"]["cap"] == 5 and v["time_ratio"] == 0.3 and v["holds"]
    # nothing within half the paper's time: the largest cap is reported, and it fails on time
    slow = [dict(r, seconds=r["seconds"] + 3) for r in curve]
    v, = _bench().verdict([paper, *anderson, *slow])
    assert v["ours"]["cap"] == 40 and v["time_ratio"] == 1.2 and v["beats_paper"] and v["beats_anderson"]
    assert not v["holds"]


def test_verdict_counts_latent_mses_below_the_latents_resolution_as_equal():
    def row(method, cap, mse, s, floor=1e-13):
        return {"case": "c", "method": method, "cap": cap, "latent_mse": mse, "seconds": s, "mse_floor": floor}

    paper = row("preciseinv paper", 100, 1e-9, 1.0)
    anderson = [row("fixed_point anderson", 5, 2.39e-14, 0.4)]
    ours = [row("preciseinv hybrid (default)", 3, 2.45e-14, 0.4)]
    assert _bench().verdict([paper, *anderson, *ours])[0]["beats_anderson"]  # both float32 rounding
    ours = [row("preciseinv hybrid (default)", 3, 2.45e-14, 0.4, floor=1e-15)]
    anderson = [row("fixed_point anderson", 5, 2.39e-14, 0.4, floor=1e-15)]
    assert not _bench().verdict([paper, *anderson, *ours])[0]["beats_anderson"]


def test_the_envelope_reads_the_defaults_curve_between_its_runs():
    bench = _bench()

    def row(method, mse, s):
        return {"case": "c", "method": method, "cap": 0, "latent_mse": mse, "seconds": s}

    # log MSE linear in cost between consecutive runs, and only where the later run is better
    runs = [row(bench.DEFAULT, 1e-2, 10.0), row(bench.DEFAULT, 1e-1, 20.0), row(bench.DEFAULT, 1e-4, 30.0)]
    assert bench.cost_to_reach(runs, 1e-2, "latent_mse", "seconds") == 10.0
    assert bench.cost_to_reach(runs, 1e-3, "latent_mse", "seconds") == pytest.approx(20 + 10 * 2 / 3)
    assert bench.cost_to_reach(runs, 1e-5, "latent_mse", "seconds") == float("inf")
    assert bench.cost_to_reach(runs, 1e-5, "latent_mse", "seconds", floor=1e-4) == 30.0  # below the floor: equal
    rivals = [row("fixed_point anderson", 1e-3, 22.5), row("fixed_point anderson", 1e-3, 21.0)]
    e, = bench.envelope(runs + rivals)  # 26.7 <= 1.2 x 22.5, > 1.2 x 21
    assert e["rivals"] == 2 and e["uncovered"] == [rivals[1]]
