"""Flow methods (RF-Solver, FireFlow, Uni-Inv, RF-Inversion), FlowEdit and MMDiT key/value sharing."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from inversa import InversaError, invert, reconstruct
from inversa.cli.main import main
from inversa.core import flow
from inversa.core.metrics import relative_error
from inversa.editing.attention import Injector, SharingProcessor, injecting, injection_kind
from inversa.editing.edit import edit, sample_branches
from inversa.editing.recipes.flowedit import flowedit
from inversa.inversion.api import condition_of, sample, schedule_of
from inversa.models.oracle import GaussianModel, affine_preimage

FLOW_METHODS = ("rf_solver", "fireflow", "uni_inv", "rf_inversion")
CAT = "a cat"


def own_exact(model, inv):
    """The noise from which the inversion's own sampler returns exactly ``z0`` (samplers are affine here)."""
    run = lambda x: sample(model, dataclasses.replace(inv, x_T=x), schedule_of(model, inv), condition_of(model, inv))  # noqa: E731
    return affine_preimage(run, inv.z0)


def oracle_case(method, steps=10, guidance=3.5, **config):
    model = GaussianModel(prediction="flow")
    z0 = model.sample_data(2, CAT, seed=3)
    inv = invert(model, z0, CAT, method=method, steps=steps, guidance=guidance, **config)
    return model, z0, inv


def test_affine_preimage_is_the_exact_euler_inversion():
    model, z0, inv = oracle_case("ddim", steps=6)
    exact = model.exact_inversion(z0, schedule_of(model, inv), condition_of(model, inv))[0]
    assert float(relative_error(own_exact(model, inv), exact).max()) < 1e-12


@pytest.mark.parametrize("method,steps,x_T_bound,recon_bound", [("rf_solver", 10, 3e-2, 1e-2),
                                                                ("fireflow", 10, 4e-2, 3e-2),
                                                                ("uni_inv", 28, 5e-2, 2e-2)])
def test_flow_methods_invert_their_own_sampler_on_the_oracle(method, steps, x_T_bound, recon_bound):
    model, z0, inv = oracle_case(method, steps)
    _, _, naive = oracle_case("ddim", steps)
    error = float(relative_error(inv.x_T, own_exact(model, inv)).max())
    assert error < x_T_bound
    assert error < float(relative_error(naive.x_T, own_exact(model, naive)).min()) / 3  # beats Euler inversion
    assert float(relative_error(reconstruct(model, inv), z0).max()) < recon_bound


@pytest.mark.parametrize("method", ["rf_solver", "fireflow"])
def test_second_order_methods_converge_to_the_flow_ode_noise(method):
    model, z0, inv = oracle_case(method, steps=40)
    _, _, naive = oracle_case("ddim", steps=40)
    ode = model.flow_noise(z0, condition_of(model, inv))
    assert float(relative_error(inv.x_T, ode).max()) < 3e-3
    assert float(relative_error(naive.x_T, ode).min()) > 1e-2


@pytest.mark.parametrize("method,nfe", [("rf_solver", 2 * 5), ("fireflow", 5 + 1), ("uni_inv", 5 + 1),
                                        ("rf_inversion", 5)])
def test_network_evaluations_per_inversion(method, nfe):
    _, _, inv = oracle_case(method, steps=5, guidance=1.0)
    assert inv.stats["nfe"] == nfe and sum(s["nfe"] for s in inv.steps) == nfe
    _, _, guided = oracle_case(method, steps=5, guidance=3.5)
    assert guided.stats["nfe"] == 2 * nfe


def test_rf_inversion_controller_limits():
    model, z0, free = oracle_case("rf_inversion", gamma=0.0)
    _, _, pulled = oracle_case("rf_inversion", gamma=1.0, seed=7)
    v = flow.velocity(model, condition_of(model, free), "euler")
    euler = flow.integrate(model, z0, schedule_of(model, free), lambda i, x, s, s_next, c: (flow.euler_step(v, x, s, s_next), c),
                           inverse=True)[0]
    assert float(relative_error(free.x_T, euler).max()) < 1e-12  # gamma 0: plain Euler inversion
    y1 = torch.randn(z0.shape, generator=torch.Generator().manual_seed(7), dtype=z0.dtype)
    assert float(relative_error(pulled.x_T, y1).max()) < 1e-12  # gamma 1: the straight path to y1
    assert float(relative_error(reconstruct(model, dataclasses.replace(pulled, config={"eta": 1.0, "stop": 1.0})),
                                z0).max()) < 1e-12  # eta 1 everywhere: the straight path back to y0


def test_rf_inversion_eta_pulls_the_reconstruction_back():
    model, z0, inv = oracle_case("rf_inversion")
    plain, half, most = (float(relative_error(reconstruct(model, dataclasses.replace(inv, config=config)), z0).max())
                         for config in ({}, {"eta": 0.5, "stop": 1.0}, {"eta": 0.9, "stop": 1.0}))
    assert plain > 1.0 and half < plain / 3 and most < half / 5
    _, _, window = oracle_case("rf_inversion", eta=0.9)  # the sampler's window defaults as the inversion's: [0, 0.25)
    with_stop = lambda stop: reconstruct(model, dataclasses.replace(window, config={"eta": 0.9, "stop": stop}))  # noqa: E731
    assert torch.equal(reconstruct(model, window), with_stop(0.25)) and not torch.equal(reconstruct(model, window), with_stop(1.0))
    with pytest.raises(InversaError, match="rf_inversion gamma must be in"):
        oracle_case("rf_inversion", gamma=1.5)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_flow_methods_refuse_other_models_in_one_line(method):
    model = GaussianModel(prediction="epsilon")
    with pytest.raises(InversaError, match=f"^{method} needs a flow-matching model .*predicts epsilon$"):
        invert(model, model.sample_data(1), method=method, steps=2)


def test_flowedit_translates_gaussian_data_by_the_mean_shift_and_keeps_it_for_equal_prompts():
    model = GaussianModel(prediction="flow")
    z0 = model.sample_data(2, CAT)
    shift = (model.encode_prompt(["a dog"]).hidden - model.encode_prompt([CAT]).hidden).view(1, *model.shape)
    z = flowedit(model, z0, [CAT] * 2, ["a dog"] * 2, steps=4, guidance=1.0, strength=1.0)
    assert float(relative_error(z - z0, shift.expand_as(z)).max()) < 1e-12  # same variance: OT is a translation
    same = flowedit(model, z0, [CAT] * 2, [CAT] * 2, steps=4, guidance=3.0, source_guidance=3.0, n_avg=2)
    assert float((same - z0).abs().max()) < 1e-12
    with pytest.raises(InversaError, match="flowedit needs a flow-matching model"):
        flowedit(GaussianModel(), z0, [CAT] * 2, ["a dog"] * 2, steps=2)


def test_rf_inversion_edit_carries_the_image_latent_to_both_branches():
    model = GaussianModel(prediction="flow")
    z0 = model.sample_data(1, CAT)
    res = edit(model, z0, CAT, "a dog", method="rf_inversion", steps=4, guidance=3.0, eta=1.0, stop=1.0, full=True)
    assert float(relative_error(res.source, z0)) < 1e-12 and float(relative_error(res.images, z0)) < 1e-12


@pytest.fixture(scope="module")
def sd3(tiny_model):
    return tiny_model("sd3")


def _image(seed=0):  # 32 px: 16 x 16 latent tokens keep the transformer fast
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_flow_methods_beat_euler_reconstruction_on_tiny_sd3(sd3):
    errors = {}
    for method in ("ddim",) + FLOW_METHODS:
        inv = invert(sd3, _image(), "a red circle", method=method, steps=4)
        errors[method] = float(relative_error(reconstruct(sd3, inv, decode=False), inv.z0))
    assert all(errors[m] < errors["ddim"] / 3 for m in ("rf_solver", "fireflow", "uni_inv")), errors
    assert np.isfinite(errors["rf_inversion"])


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_cli_inversion_replays_through_reconstruct(method, pipeline_dir, photo, tmp_path):
    out = tmp_path / "out"
    assert main(["invert", photo, "--model", pipeline_dir("sd3"), "--method", method, "--steps", "2", "--size", "32",
                 "-o", str(out)]) == 0
    png = tmp_path / "again.png"
    assert main(["reconstruct", str(out / "inversion.safetensors"), "--model", pipeline_dir("sd3"), "-o", str(png)]) == 0
    again = np.asarray(Image.open(png), dtype=np.int16)
    first = np.asarray(Image.open(out / "astronaut_reconstruction.png"), dtype=np.int16)
    assert np.abs(again - first).max() <= 1


def test_cli_flowedit_on_tiny_sd3_and_its_errors(pipeline_dir, photo, tmp_path, capsys):
    out = tmp_path / "edited.png"
    assert main(["edit", photo, "-s", "a red circle", "-t", "a blue circle", "--model", pipeline_dir("sd3"),
                 "--method", "flowedit", "--steps", "3", "--guidance", "3", "--opt", "n_avg=2", "--size", "32",
                 "-o", str(out)]) == 0
    assert out.exists() and (tmp_path / "edited_source.png").exists()
    assert "flowedit: 'a red circle' -> 'a blue circle'" in capsys.readouterr().out
    for args, message in ((["--model", pipeline_dir("sd")], "flowedit needs a flow-matching model"),
                          (["--model", pipeline_dir("sd3"), "--opt", "gamma=1"], "flowedit has no option gamma")):
        assert main(["edit", photo, "-s", "a", "-t", "b", "--method", "flowedit", "--steps", "2", "--size", "32",
                     *args, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_kv_sharing_on_sd3_changes_only_the_target_rows(sd3):
    assert injection_kind(sd3) == "kv"
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    emb = sd3.encode_prompt(["a red circle", "a blue circle"])
    plain = sd3.forward(x, 500.0, emb)
    inj = Injector(block=1)
    with injecting(sd3, inj):
        idle = sd3.forward(x, 500.0, emb)
        inj.self_from, inj.t = 0.0, 500.0
        shared = sd3.forward(x, 500.0, emb)
    assert torch.equal(idle, plain) and torch.allclose(shared[0], plain[0], atol=1e-6)
    assert not torch.allclose(shared[1], plain[1], atol=1e-4)
    assert inj.injected == 2 * 2 and inj.image_tokens == 16 * 16  # 2 layers x (keys, values); patch 1
    assert not any(isinstance(p, SharingProcessor) for p in sd3.net.attn_processors.values())


def test_kv_sharing_edit_on_sd3_keeps_the_source_branch(sd3):
    inv = invert(sd3, _image(), "a red circle", method="fireflow", steps=2)
    free = sample_branches(sd3, inv, "a blue circle", guidance=1.0, cross_replace=0.0, decode=False)
    shared = sample_branches(sd3, inv, "a blue circle", guidance=1.0, cross_replace=0.0, self_replace=0.5, decode=False)
    assert torch.equal(free[0], shared[0]) and not torch.equal(free[1], shared[1])


def test_kv_sharing_shares_only_image_tokens_of_flux_single_blocks():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    net = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                 num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=24,
                                 axes_dims_rope=(4, 6, 6)).eval()
    img, txt = torch.randn(2, 16, 8), torch.randn(2, 5, 24)
    ids = dict(img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(5, 3))
    args = dict(hidden_states=img, encoder_hidden_states=txt, pooled_projections=torch.randn(2, 24),
                timestep=torch.full((2,), 0.5), return_dict=False, **ids)
    calls = []

    class Spy(Injector):
        def share(self, features, tokens):
            calls.append((features.shape[1], tokens))
            return super().share(features, tokens)

    with torch.no_grad():
        plain = net(**args)[0]
        inj = Spy(block=1, self_from=0.0, t=1.0)
        with injecting(type("Flux", (), {"net": net})(), inj):
            shared = net(**args)[0]
    # joint block: keys and values of the 16 image tokens; single block: the last 16 of [5 text, 16 image]
    assert calls == [(16, 16), (16, 16), (21, 16), (21, 16)] and inj.injected == 4
    assert torch.allclose(shared[0], plain[0], atol=1e-6) and not torch.allclose(shared[1], plain[1], atol=1e-4)


def test_share_copies_the_last_tokens_of_source_rows_onto_target_rows():
    features = torch.arange(2 * 2 * 3 * 1.0).reshape(4, 3, 1)  # (uncond, cond) x (source, target), 3 tokens
    out = Injector(block=1).share(features, 2)
    assert out[:, :, 0].tolist() == [[0, 1, 2], [3, 1, 2], [6, 7, 8], [9, 7, 8]]


def test_flow_table_script_writes_every_row_with_its_settings(tmp_path, bench_script):
    ft = bench_script("flow_table")
    assert ft.main(["--sources", "oracle", "--steps", "2", "--guidance", "1,3.5", "--out", str(tmp_path / "t")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "Settings: float64 oracle" in text and "| 2 steps, w 3.5 |" in text
    assert all(f"| {label} | " in text for label, _, _ in ft.ROWS)
    euler = __import__("json").loads((tmp_path / "t.json").read_text())["results"]["oracle"]["euler (ddim)"]["2/1.0"]
    assert euler["nfe_per_step"] == 1.0 and euler["x_T"] > 0.1  # naive inversion is far from exact at 2 steps
