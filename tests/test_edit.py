"""Editing (recipe, source branch, attention injection) and interpolation."""
import pytest
import torch

from inversa import invert, reconstruct
from inversa.cli.main import main
from inversa.core.errors import InversaError
from inversa.core.metrics import relative_error
from inversa.editing.attention import Injector, InjectingProcessor, align_tokens, injecting, token_columns
from inversa.editing.edit import default_negative, edit, sample_branches
from inversa.editing.interpolate import interpolate
from inversa.models.oracle import GaussianModel

SRC, TGT = "a red circle", "a blue circle"


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1


def test_direct_source_branch_reproduces_the_image_latent(tiny_model):
    model = tiny_model("sd")
    inv = invert(model, _image(), SRC, method="direct", steps=3, guidance=7.5)
    source, target = sample_branches(model, inv, TGT, guidance=7.5, cross_replace=0.0, decode=False)
    assert float(relative_error(source, inv.z0)) < 5e-3
    assert float(relative_error(target, inv.z0)) > 10 * float(relative_error(source, inv.z0))


@pytest.mark.parametrize("method", ["edict", "ddpm_edit_friendly", "negative_prompt"])
def test_source_branch_is_the_reconstruction(tiny_model, method):
    model = tiny_model("sd")
    inv = invert(model, _image(), SRC, method=method, steps=2)
    source, _ = sample_branches(model, inv, TGT, guidance=5.0, cross_replace=0.5, decode=False)
    # source prompt as negative: guidance collapses and the branch replays the inversion
    # (up to float32 batch-composition noise, amplified by guidance: u - c is ~1e-7, not 0)
    assert float(relative_error(source, reconstruct(model, inv, decode=False))) < 1e-2


def test_identical_prompts_give_identical_branches_and_edit_changes_image(tiny_model):
    model = tiny_model("sd")
    res = edit(model, _image(), SRC, SRC, method="ddim", steps=3, guidance=7.5, negative=SRC, full=True)
    assert torch.allclose(res.images, res.source, atol=1e-4)
    edited = edit(model, _image(), SRC, TGT, method="ddim", steps=3, guidance=7.5, cross_replace=0.0)
    assert edited.shape == (1, 3, 64, 64) and not torch.allclose(edited, res.source, atol=1e-3)


def test_default_negative_is_empty_at_w1_and_the_source_prompt_for_coupled_samplers(tiny_model):
    model = tiny_model("sd")
    for method, expect in (("ddim", ""), ("edict", SRC)):
        inv = invert(model, _image(), SRC, method=method, steps=3)
        assert default_negative(inv) == [expect]
        _, default = sample_branches(model, inv, TGT, guidance=7.5, cross_replace=0.0, decode=False)
        _, named = sample_branches(model, inv, TGT, guidance=7.5, negative=expect, cross_replace=0.0, decode=False)
        _, other = sample_branches(model, inv, TGT, guidance=7.5, negative="a blue square", cross_replace=0.0,
                                   decode=False)
        assert torch.equal(default, named) and not torch.allclose(default, other, atol=1e-3)
    inv = invert(model, _image(), SRC, method="null_text", steps=2, guidance=7.5, iters=1)
    assert default_negative(inv) == list(inv.negative)
    # negative-prompt inversion samples against the source prompt (its definition): the default names it, so
    # the attention columns injected for the unconditional half are the source prompt's tokens
    inv = invert(model, _image(), SRC, method="negative_prompt", steps=3)
    assert default_negative(inv) == [SRC]


def test_cross_attention_injection_replaces_target_maps(tiny_model):
    model = tiny_model("sd")
    inv = invert(model, _image(), SRC, method="ddim", steps=3)
    _, free = sample_branches(model, inv, TGT, guidance=1.0, cross_replace=0.0, decode=False)
    _, injected = sample_branches(model, inv, TGT, guidance=1.0, cross_replace=1.0, self_replace=1.0, decode=False)
    assert not torch.allclose(free, injected)
    # processors are restored afterwards
    assert all(not isinstance(p, InjectingProcessor) for p in model.net.attn_processors.values())


def test_injecting_processor_matches_default_attention_and_copies_maps(tiny_model):
    model = tiny_model("sd")
    x = torch.randn(2, 4, 32, 32)
    emb = model.encode_prompt([SRC, TGT])
    ref = model.forward(x, 500, emb)
    inj = Injector(block=1)
    with injecting(model, inj):
        same = model.forward(x, 500, emb)
        inj.cross_from, inj.self_from, inj.t = 0.0, 0.0, 500.0
        copied = model.forward(torch.cat([x[:1], x[:1]]), 500, model.encode_prompt([SRC, SRC]))
    assert torch.allclose(ref, same, atol=1e-5)
    assert inj.injected > 0 and torch.allclose(copied[0], copied[1], atol=1e-6)


def test_token_alignment_maps_shared_and_swapped_words_and_leaves_new_ones():
    # bos a red circle eos pad pad  ->  bos a big blue circle eos pad
    assert align_tokens([0, 5, 6, 7, 1, 2, 2], [0, 5, 9, 8, 7, 1, 2]).tolist() == [0, 1, -1, -1, 3, 4, 5]
    assert align_tokens([0, 5, 6, 7, 1], [0, 5, 8, 7, 1]).tolist() == [0, 1, 2, 3, 4]  # swap: replace edit


def test_injector_takes_mapped_source_columns_and_keeps_own_for_new_words():
    probs = torch.arange(16.0).reshape(2, 2, 4)  # (source, target) x Lq 2 x Lk 4, one head, no guidance
    inj = Injector(block=1, columns=torch.tensor([[[0, -1, 1, 3]]]))
    out = inj.replace(probs, heads=1, is_cross=True)
    assert torch.equal(out[0], probs[0])
    assert out[1].tolist() == [[0, 9, 1, 3], [4, 13, 5, 7]]
    assert torch.equal(inj.replace(probs, heads=1, is_cross=False)[1], probs[0])  # self-attention: plain copy


def test_prompts_of_different_lengths_edit_with_aligned_injection(tiny_model):
    model = tiny_model("sd")
    cols = token_columns(model, [["a red circle"]], [["a big blue circle"]])[0, 0]
    tok = model.pipe.tokenizer
    src, tgt = (tok(p).input_ids for p in ("a red circle", "a big blue circle"))
    mapped = cols[cols >= 0]
    assert cols[len(tgt) - 1] == len(src) - 1 and cols[0] == 0  # end and start of text align
    assert (cols == -1).any() and bool((mapped[1:] > mapped[:-1]).all())  # new words keep their own; monotone
    inv = invert(model, _image(), SRC, method="ddim", steps=2)
    _, z = sample_branches(model, inv, "a big blue circle", guidance=3.0, cross_replace=1.0, decode=False)
    assert z.shape == inv.z0.shape and torch.isfinite(z).all()


def test_edit_on_a_model_without_unet_skips_injection():
    model = GaussianModel()
    z0 = model.sample_data(1, SRC)
    res = edit(model, z0, SRC, TGT, method="edict", steps=4, guidance=3.0, full=True)
    assert float(relative_error(res.source, z0)) < 1e-8
    assert float(relative_error(res.images, z0)) > 1e-3


def test_null_text_edit_uses_its_embeddings(tiny_model):
    model = tiny_model("sd")
    res = edit(model, _image(), SRC, TGT, method="null_text", steps=2, guidance=7.5, iters=2, full=True)
    assert res.inversion.guidance == 7.5 and res.inversion.state["uncond_hidden"].shape[:2] == (2, 1)
    assert torch.isfinite(res.images).all()


def test_edit_rejects_bad_fraction(tiny_model):
    with pytest.raises(InversaError, match="cross_replace"):
        edit(tiny_model("sd"), _image(), SRC, TGT, steps=2, cross_replace=1.5)


@pytest.mark.parametrize("method", ["ddim", "bdia"])
def test_interpolation_endpoints_are_reconstructions(tiny_model, method):
    model = tiny_model("sd") if method == "ddim" else GaussianModel()
    a, b = (_image(0), _image(1)) if method == "ddim" else (model.sample_data(1, seed=1), model.sample_data(1, seed=2))
    frames = interpolate(model, a, b, [0.0, 0.5, 1.0], SRC, method=method, steps=2, decode=False)
    inv = invert(model, torch.cat([a, b]), SRC, method=method, steps=2)
    recon = reconstruct(model, inv, decode=False)
    assert frames.shape[0] == 3
    assert float(relative_error(frames[::2], recon).max()) < 1e-3
    assert not torch.allclose(frames[1], recon[0], atol=1e-2)


def test_cli_edit_and_interpolate(pipeline_dir, photo, tmp_path, capsys):
    out = tmp_path / "edited.png"
    assert main(["edit", photo, "-s", SRC, "-t", TGT, "--model", pipeline_dir("sd"), "--steps", "2",
                 "--method", "direct", "-o", str(out)]) == 0
    assert out.exists() and (tmp_path / "edited_source.png").exists()
    assert "source-branch psnr" in capsys.readouterr().out
    folder = tmp_path / "interp"
    assert main(["interpolate", photo, photo, "--alpha", "0", "1", "--model", pipeline_dir("sd"), "--steps", "2",
                 "-o", str(folder)]) == 0
    assert (folder / "strip.png").exists() and len(list(folder.glob("frame_*.png"))) == 2
    assert main(["edit", photo, "-s", SRC, "-t", TGT, "--model", pipeline_dir("sd"), "--steps", "2",
                 "--method", "nope"]) == 2


def test_edit_bench_scores_the_truth_as_success_and_the_input_as_failure(bench_script):
    eb = bench_script("edit_bench")
    for task in eb.tasks(2, seed=1):
        perfect = eb.score(task, task.target_image, task.image)
        assert perfect["success"] == 1.0 and perfect["bg_psnr"] == pytest.approx(120.0)
        assert perfect["truth_psnr"] > 100 and perfect["src_psnr"] > 100
        unchanged = eb.score(task, task.image, task.image)
        assert unchanged["success"] == 0.0 and unchanged["structure"] == 0.0


def test_edit_bench_writes_table_rows_and_gallery(tmp_path, bench_script):
    eb = bench_script("edit_bench")
    out = tmp_path / "edit"
    assert eb.main(["--model", "random-sd", "--n", "1", "--steps", "2", "--methods", "ddim", "direct",
                    "--out", str(out)]) == 0
    table = (tmp_path / "edit.md").read_text()
    assert all(f"| {m} |" in table for m in ("vae round trip (ceiling)", "ddim", "direct"))
    rows = __import__("json").loads((tmp_path / "edit.json").read_text())["results"]
    assert [r["kind"] for r in rows["direct"]] == ["colour", "shape"]
    assert (tmp_path / "edit.png").stat().st_size > 1000
