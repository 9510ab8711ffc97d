"""benchmarks/full_size.py: the published architectures are built exactly, and the reduced run works end to end."""
import json

import pytest
import torch

from inversa.core.errors import InversaError

pytestmark = pytest.mark.slow  # full-size architectures (the reduced run too)

# parameter counts of the published denoisers (diffusers' num_parameters() of the real checkpoints)
PUBLISHED = {"sd15": 859_520_964, "sd21": 865_910_724, "sdxl": 2_567_463_684, "sd3_medium": 2_028_328_000,
             "flux1_dev": 11_901_408_320}


# the configs written for issue 31: their counts on the meta device, and the size each model is known by
BUILT = {"flux2_dev": (32_223_281_152, 32e9), "qwenimage": (20_430_401_088, 20.43e9), "sana_1600m": (1_604_462_752, 1.6e9),
         "wan21_1_3b": (1_418_996_800, 1.3e9), "wan21_14b": (14_288_491_584, 14e9), "cogvideox_5b": (5_570_283_072, 5e9),
         "ltx_video_2b": (1_923_385_472, 2e9),
         "pixart_sigma": (610_856_096, 0.6e9), "hunyuandit_v1_2": (1_499_952_032, 1.5e9),
         "hidream_i1_full": (17_105_733_184, 17e9)}


@pytest.fixture(scope="module")
def full_size(bench_script):
    return bench_script("full_size")


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_configs_build_the_published_architectures(full_size, arch):
    net = full_size.build_denoiser(full_size.load_spec(arch), torch.bfloat16, "meta")  # shapes only, no memory
    assert sum(p.numel() for p in net.parameters()) == PUBLISHED[arch]
    assert net.dtype == torch.bfloat16


@pytest.mark.parametrize("arch", sorted(BUILT))
def test_new_configs_build_on_meta_near_their_headline_size(full_size, arch, capsys):
    exact, headline = BUILT[arch]
    row, = full_size.main(["--count", "--arch", arch])
    assert row["params"] == exact and abs(exact / headline - 1) < 0.12 and row["headline"] == headline
    assert f"| {arch} |" in capsys.readouterr().out


def test_measuring_a_denoiser_only_config_is_refused(full_size):
    with pytest.raises(InversaError, match="measuring wan21_14b needs its pipeline's own text encoders"):
        full_size.main(["--arch", "wan21_14b", "--method", "ddim"])


def test_reduced_run_measures_every_architecture(full_size, tmp_path, capsys):
    out = tmp_path / "results.json"
    results = full_size.main(["--size", "64", "--steps", "2", "--threads", "1", "--sdpa", "math", "--method", "ddim",
                              "--method", "preciseinv solver=anderson max_iters=2", "--json", str(out)])
    assert [r["arch"] for r in results] == list(full_size.ARCHS)
    for res in results:
        assert res["scale"] == "reduced" and res["dtype"] == "bfloat16" and res["size"] == 64
        forward, ddim, precise = res["rows"]
        assert forward["s_per_nfe"] > 0 and ddim["nfe"] == 2 and ddim["nfe_per_step"] == 1.0
        assert 2 < precise["nfe"] <= 2 * 3 and precise["finite"] and precise["worst_residual"] is not None
    assert json.loads(out.read_text())[0]["rows"][1]["method"] == "ddim"
    printed = capsys.readouterr().out
    assert "bfloat16 network, float32 state" in printed and "| flux1_dev |" in printed


def test_a_size_the_architecture_cannot_take_is_refused(full_size):
    with pytest.raises(InversaError, match="image size 60x60 does not fit"):
        full_size.main(["--arch", "sd15", "--size", "60", "--method", "ddim"])
