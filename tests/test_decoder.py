"""Decoder inversion: a latent that decodes closer to the image than E(x), used by any method."""
import json
import os
import subprocess
import sys

import pytest
import torch

import inversa
from inversa.core.errors import InversaError
from inversa.core.metrics import psnr
from inversa.models.decoder import invert_decoder, options
from inversa.tiny import default_model_path


@pytest.fixture(scope="module")
def embedded():
    return inversa.load_model(default_model_path())


@pytest.fixture(scope="module")
def photos():
    from inversa.bench.datasets import photos

    return torch.cat([item.load(64) for item in photos().items[:2]])


def test_fitted_latent_decodes_above_the_round_trip_and_loss_only_falls(embedded, photos):
    found = invert_decoder(embedded, photos, iters=12)
    z0 = embedded.encode(photos)
    with torch.no_grad():
        roundtrip, fitted = psnr(photos, embedded.decode(z0)), psnr(photos, embedded.decode(found.z))
    assert torch.allclose(torch.tensor(found.roundtrip_psnr, dtype=roundtrip.dtype), roundtrip, atol=1e-3)
    assert torch.allclose(torch.tensor(found.psnr, dtype=fitted.dtype), fitted, atol=1e-3)
    assert (fitted - roundtrip).min() > 1.5  # measured about +2.6 dB after 12 iterations
    for k in range(len(photos)):  # Armijo steps: every accepted iteration lowers the loss
        losses = [h[k] for h in found.history]
        assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert found.iters == [12, 12]


def test_each_image_converges_on_its_own(embedded, photos):
    alone = invert_decoder(embedded, photos[1:], iters=5).z
    together = invert_decoder(embedded, photos, iters=5).z[1:]
    assert (alone - together).abs().max() < 1e-3 * alone.abs().max()


def test_regulariser_keeps_the_latent_near_the_encoder(embedded, photos):
    z0 = embedded.encode(photos)
    free = invert_decoder(embedded, photos, iters=10, reg=0.0).z
    held = invert_decoder(embedded, photos, iters=10, reg=1.0).z
    assert (held - z0).norm() < 0.5 * (free - z0).norm()


def test_any_method_inverts_the_fitted_latent_and_records_both_ceilings(embedded, photos):
    inv = inversa.invert(embedded, photos[:1], method="fixed_point", steps=4, decoder_inversion={"iters": 8})
    assert inv.stats["decoder_psnr"][0] > inv.stats["roundtrip_psnr"][0] + 1.0
    recon = inversa.reconstruct(embedded, inv)
    assert float(psnr(photos[:1], recon)[0]) > inv.stats["roundtrip_psnr"][0] + 1.0
    loaded = inversa.Inversion.load(inv.save(os.path.join(os.environ.get("TMPDIR", "/tmp"), "dec-inv.safetensors")))
    assert loaded.stats["decoder_iters"] == [8]


def test_options_are_checked_by_name_and_type():
    assert options(True) == {} and options({"iters": 3, "reg": 0}) == {"iters": 3, "reg": 0.0}
    with pytest.raises(InversaError, match="no option 'iter'"):
        options({"iter": 3})
    with pytest.raises(InversaError, match="iters must be int"):
        options({"iters": "many"})
    with pytest.raises(InversaError, match="True, False or a dict"):
        options("yes")


def test_pixel_models_have_nothing_to_fit():
    from inversa.models.oracle import GaussianModel

    oracle = GaussianModel(shape=(4, 8, 8))
    data = oracle.sample_data(2, seed=1)
    found = invert_decoder(oracle, data, iters=5)
    assert torch.equal(found.z, data.float()) and found.iters == [0, 0] and found.psnr == found.roundtrip_psnr


def test_cli_reports_the_decoder_ceiling(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "inversa", "invert", os.path.join(os.path.dirname(__file__), "..", "examples", "astronaut.png"),
           "--method", "ddim", "--steps", "2", "--decoder-inversion", "--decoder-opt", "iters=4", "-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stderr
    assert "decoder-inverted ceiling" in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decoder_ceiling_psnr"] > metrics["vae_ceiling_psnr"] + 0.5
    bad = subprocess.run([a for a in cmd if a != "--decoder-inversion"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "inversa: error: --decoder-opt needs --decoder-inversion"
