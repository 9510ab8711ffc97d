"""Stock parity of the flow-matching image families on their tiny random pipelines (float64).

For each family and each replayable method: invert a 32x32 image in 3 steps under guidance,
reconstruct with inversa, sample the same x_T with the family's own stock pipeline and
report the largest relative latent difference. Uses the tests' stock-call helpers.

    PYTHONPATH=src python benchmarks/flow_families_parity.py > benchmarks/flow_families_parity.md
"""
from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "tests"))

from test_flow_families import FAMILY_CALLS, PADDED, REPLAYABLE, STEPS, TOKENS, _image, stock_latents  # noqa: E402

from inversa import invert, load_model, reconstruct  # noqa: E402
from inversa.core.metrics import relative_error  # noqa: E402
from inversa.tiny.random_pipelines import save_pipeline  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    print("| family | pipeline | guidance | " + " | ".join(REPLAYABLE) + " |")
    print("|---|---|---|" + "---|" * len(REPLAYABLE))
    for family, (guidance, kw) in FAMILY_CALLS.items():
        model = load_model(save_pipeline(family), dtype="float64")
        if family in PADDED:
            model.max_sequence_length = TOKENS
        cells = []
        for method, cfg in REPLAYABLE.items():
            inv = invert(model, _image(), "a red circle", method=method, steps=STEPS, guidance=guidance, **cfg)
            ours = reconstruct(model, inv, decode=False)
            err = float(relative_error(stock_latents(model, ["a red circle"], inv.x_T, STEPS, **kw), ours).max())
            cells.append(f"{err:.1e}")
        print(f"| {family} | {type(model.pipe).__name__} | {guidance} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
