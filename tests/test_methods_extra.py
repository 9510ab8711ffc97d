"""CFG++, SPDInv / DCI and Prompt Tuning Inversion: equations on the oracle, round trips, state, editing."""
import pytest
import torch

from inversa import invert, reconstruct
from inversa.cli.main import main
from inversa.core.errors import InversaError
from inversa.core.metrics import relative_error
from inversa.core.replay import denoise
from inversa.editing.edit import edit, sample_branches
from inversa.inversion.api import schedule_of
from inversa.io.result import Inversion
from inversa.models.oracle import GaussianModel, affine_preimage

SRC, TGT = "a red circle", "a blue circle"


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1


def _rel(model, inv, **kw):
    return float(relative_error(reconstruct(model, inv, decode=False, **kw), inv.z0).max())


# --- CFG++ --------------------------------------------------------------------------------------------
def test_cfgpp_inversion_is_the_papers_equations_on_the_oracle():
    model = GaussianModel()
    z0 = model.sample_data(2, SRC)
    inv = invert(model, z0, SRC, method="cfgpp", steps=4, lam=0.4)
    sched, lam = schedule_of(model, inv), 0.4
    cond, null = model.encode_prompt([SRC]).expand(2), model.encode_prompt([""]).expand(2)
    z = z0
    for i in reversed(range(len(sched))):  # x0 = (z - sigma_p eps_u) / alpha_p, z_next = alpha x0 + sigma eps_l
        alpha, sigma, alpha_p, sigma_p = sched.levels(i)
        t = float(sched.timesteps[i])
        eps_u, eps_c = model.forward(z, t, null), model.forward(z, t, cond)
        z = alpha * (z - sigma_p * eps_u) / alpha_p + sigma * (eps_u + lam * (eps_c - eps_u))
    assert float((inv.x_T - z).abs().max()) < 1e-12
    assert inv.stats["nfe"] == 8 and inv.state == {}


def test_cfgpp_sampler_is_needed_and_lam_zero_is_unconditional_ddim():
    model = GaussianModel(prediction="v_prediction")
    z0 = model.sample_data(1, SRC)
    inv = invert(model, z0, SRC, method="cfgpp", steps=5)
    exact = affine_preimage(lambda x: reconstruct(model, Inversion(**{**vars(inv), "x_T": x}), decode=False), z0)
    plain = denoise(model, exact, schedule_of(model, inv), model.condition([SRC]))
    assert float(relative_error(plain, z0)) > 1e-3  # the plain sampler is not CFG++'s
    assert float(relative_error(inv.x_T, exact)) < 0.5  # naive, like DDIM: close, not exact
    zero = invert(model, z0, SRC, method="cfgpp", steps=5, lam=0.0)
    ddim = invert(model, z0, "", method="ddim", steps=5)
    assert torch.allclose(zero.x_T, ddim.x_T, atol=1e-12)


def test_cfgpp_refuses_guidance_and_lam_outside_unit_interval():
    model = GaussianModel()
    z0 = model.sample_data(1, SRC)
    with pytest.raises(InversaError, match="leave guidance at 1"):
        invert(model, z0, SRC, method="cfgpp", steps=2, guidance=7.5)
    with pytest.raises(InversaError, match=r"lam must be in \[0, 1\]"):
        invert(model, z0, SRC, method="cfgpp", steps=2, lam=1.5)


# --- SPDInv / DCI -------------------------------------------------------------------------------------
def test_spdinv_refines_the_naive_step_towards_the_exact_inversion():
    model = GaussianModel()
    z0 = model.sample_data(2, SRC)
    ddim = invert(model, z0, SRC, method="ddim", steps=6)
    spd = invert(model, z0, SRC, method="spdinv", steps=6)
    chain = spd.state["chain"]
    assert chain.shape == (7, *z0.shape) and torch.equal(chain[0], spd.x_T) and torch.equal(chain[-1], z0)
    assert all(s["iters"][0] <= 25 for s in spd.steps)
    assert _rel(model, spd) < 0.8 * _rel(model, ddim)  # paper settings: 25 AdamW rounds at lr 1e-3
    for w, gain in ((1.0, 1e-2), (3.0, 0.5)):  # guided: the guided step is refined (AdamW is slower there)
        long = invert(model, z0, SRC, method="spdinv", steps=6, guidance=w, iters=200, lr=1e-2, tol=1e-14)
        naive = invert(model, z0, SRC, method="ddim", steps=6, guidance=w)
        exact = model.exact_inversion(z0, schedule_of(model, long), model.condition([SRC], w))[0]
        assert float(relative_error(long.x_T, exact).max()) < gain * float(relative_error(naive.x_T, exact).max())


def test_dci_is_spdinvs_loop_plus_the_reference_correction():
    model = GaussianModel()
    z0 = model.sample_data(1, SRC)
    spd = invert(model, z0, SRC, method="spdinv", steps=4, iters=5)
    assert torch.equal(invert(model, z0, SRC, method="dci", steps=4, ref_weight=0.0).x_T, spd.x_T)
    dci = invert(model, z0, SRC, method="dci", steps=4)
    assert not torch.allclose(dci.x_T, spd.x_T) and dci.stats["nfe"] <= 4 * 6


@pytest.mark.parametrize("opts,match", [({"prox": 1.0}, "prox is a quantile"),
                                        ({"pull": 0.5}, "pull needs prox")])
def test_spdinv_bad_options(opts, match):
    model = GaussianModel()
    with pytest.raises(InversaError, match=match):
        invert(model, model.sample_data(1), SRC, method="spdinv", steps=2, **opts)


# --- Prompt tuning ------------------------------------------------------------------------------------
def test_prompt_tuning_on_the_oracle_is_near_exact():
    model = GaussianModel()
    z0 = model.sample_data(2, SRC)
    ddim = invert(model, z0, SRC, method="ddim", steps=5, guidance=7.5)
    pti = invert(model, z0, SRC, method="prompt_tuning", steps=5, guidance=7.5, iters=50, lr=0.05, tol=1e-14)
    assert pti.state["cond_hidden"].shape == (5, 2, 1, z0[0].numel())
    assert _rel(model, pti) < 1e-2 * _rel(model, ddim)
    with pytest.raises(InversaError, match="same number of steps"):
        reconstruct(model, pti, steps=3)


def test_prompt_tuning_needs_guidance():
    model = GaussianModel()
    with pytest.raises(InversaError, match="guidance != 1"):
        invert(model, model.sample_data(1), SRC, method="prompt_tuning", steps=2)


# --- every method on a tiny pipeline ------------------------------------------------------------------
CASES = {"cfgpp": ({}, 1.0), "spdinv": ({"iters": 3}, 1.0), "dci": ({}, 1.0),
         "prompt_tuning": ({"iters": 2, "lr": 0.1}, 3.0)}


@pytest.mark.parametrize("method", CASES)
def test_round_trip_save_load_and_edit_on_a_tiny_pipeline(method, tiny_model, tmp_path):
    model = tiny_model("sd")
    opts, w = CASES[method]
    inv = invert(model, _image(), SRC, method=method, steps=2, guidance=w, **opts)
    recon = reconstruct(model, inv, decode=False)
    loaded = Inversion.load(inv.save(str(tmp_path / "inv.safetensors")))
    assert loaded.config == inv.config and sorted(loaded.state) == sorted(inv.state)
    assert torch.equal(reconstruct(model, loaded, decode=False), recon)
    result = edit(model, _image(), SRC, TGT, method=method, steps=2, cross_replace=0.5, full=True, **opts)
    assert result.images.shape == (1, 3, 64, 64)
    source, target = sample_branches(model, result.inversion, TGT, guidance=7.5, cross_replace=0.5, decode=False)
    # the source branch replays the inversion (cfgpp: its own null-text sampler; the others: the source
    # prompt as negative collapses guidance, up to float32 batch-composition noise)
    assert float(relative_error(source, reconstruct(model, result.inversion, decode=False))) < 1e-2
    assert float(relative_error(target, source)) > 1e-3


def test_spdinv_prox_and_pull_keep_the_unedited_latent_on_the_chain(tiny_model):
    model = tiny_model("sd")
    inv = invert(model, _image(), SRC, method="spdinv", steps=3, iters=2, prox=0.7, pull=1.0)
    _, target = sample_branches(model, inv, TGT, guidance=7.5, cross_replace=0.0, decode=False)
    on_chain = (target - inv.z0).abs().amax(1) == 0  # pull = 1 puts those pixels exactly on z0 at the last step
    assert 0.05 < float(on_chain.float().mean()) < 0.95
    plain = invert(model, _image(), SRC, method="spdinv", steps=3, iters=2)
    _, free = sample_branches(model, plain, TGT, guidance=7.5, cross_replace=0.0, decode=False)
    assert float(((free - inv.z0).abs().amax(1) == 0).float().mean()) == 0.0
    with pytest.raises(InversaError, match="edit with that many steps"):
        sample_branches(model, inv.__class__(**{**vars(inv), "state": {"chain": inv.state["chain"][:2]}}), TGT)


def test_cli_lists_and_edits_with_the_new_methods(pipeline_dir, photo, tmp_path, capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert all(m in listed for m in CASES)
    out = tmp_path / "e.png"
    assert main(["edit", photo, "-s", SRC, "-t", TGT, "--model", pipeline_dir("sd"), "--steps", "2", "--method",
                 "spdinv", "--opt", "iters=2", "--opt", "prox=0.7", "--opt", "pull=0.5", "-o", str(out)]) == 0
    assert out.exists()
    assert main(["edit", photo, "-s", SRC, "-t", TGT, "--model", pipeline_dir("sd"), "--steps", "2", "--method",
                 "cfgpp", "--opt", "lam=2", "-o", str(out)]) == 2
    assert "lam must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["sd", "sd3"])
@pytest.mark.parametrize("method,w,opts", [("cfgpp", 1.0, {}), ("prompt_tuning", 3.0, {"iters": 2, "lr": 0.1}),
                                           ("spdinv", 1.0, {"iters": 2})])
def test_stock_pipeline_replays_the_new_methods(family, method, w, opts, tiny_model):
    from inversa import stock_callback
    from inversa.inversion.stock import stock_scheduler

    model = tiny_model(family, "float64")
    inv = invert(model, _image(), SRC, method=method, steps=3, guidance=w, **opts)
    pipe = type(model.pipe).from_pipe(model.pipe, scheduler=stock_scheduler(model.pipe), dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    replay = stock_callback(model.pipe, inv)
    prompt = {} if "prompt_embeds" in replay.kwargs else {"prompt": inv.prompts}
    got = pipe(**prompt, output_type="latent", **replay.kwargs).images
    err = float(relative_error(got, reconstruct(model, inv, decode=False)))
    assert err < 1e-5
    if method != "spdinv":  # a plain x_T: nothing to replay; the others need the callback
        bare = {k: v for k, v in replay.kwargs.items() if not k.startswith("callback")}
        plain = pipe(**prompt, output_type="latent", **bare).images
        assert float(relative_error(plain, got)) > 100 * err


def test_edit_bench_runs_a_method_with_its_editing_options(tmp_path, bench_script):
    eb = bench_script("edit_bench")
    label = "spdinv + prox 0.7 + pull 1"
    assert eb.VARIANTS[label] == ("spdinv", {"prox": 0.7, "pull": 1.0})
    assert eb.main(["--model", "random-sd", "--n", "1", "--steps", "2", "--methods", label, "--out",
                    str(tmp_path / "edit")]) == 0
    assert f"| {label} |" in (tmp_path / "edit.md").read_text()
    rows = __import__("json").loads((tmp_path / "edit.json").read_text())["results"][label]
    assert all(r["nfe"] > 2 * 2 * 2 for r in rows)  # inversion + two guided branches x 2 steps
