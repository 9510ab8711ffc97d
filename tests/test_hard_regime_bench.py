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
    assert default and max(r["xT_err"] for r in default) <= 1e-6
    text = open(out + ".md").read()
    assert "## Verdict" in text and "--quick --families oracle" in text and "oracle 2" in text
    verdicts = [line for line in text.splitlines() if line.startswith("| oracle-")][:len(cases)]
    assert len(verdicts) == len(cases) and all(line.endswith(("**yes** |", "**NO** |")) for line in verdicts)


def test_a_time_budget_keeps_the_cases_already_done(tmp_path):
    """Results are written after every case, so a bounded run still leaves a complete table of what it ran."""
    out = str(tmp_path / "hard")
    assert _bench().main(["--quick", "--families", "oracle", "--minutes", "1e-9", "--out", out]) == 0
    rows = json.load(open(out + ".json"))["rows"]
    assert {r["case"] for r in rows} == {"oracle-epsilon w1 2 steps"}
    assert os.path.exists(f"{out}-oracle-epsilon_w1_2_steps.png") and "oracle-epsilon w1 2 steps" in open(out + ".md").read()
