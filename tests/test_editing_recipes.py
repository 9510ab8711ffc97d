"""The editing recipes ddcm (InfEdit) and guide_and_rescale through edit() and `inversa edit`."""
import pytest
import torch

from inversa.cli.main import main
from inversa.core.errors import InversaError
from inversa.core.metrics import relative_error
from inversa.editing.attention import capturing
from inversa.editing.edit import edit
from inversa.editing.recipes.ddcm import ddcm
from inversa.editing.recipes.guide_rescale import energy, guide_and_rescale
from inversa.models.oracle import GaussianModel

SRC, TGT = "a red circle", "a blue circle"


def _latent(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return model.encode(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1)  # small: self-attention maps are (HW)^2


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddcm_translates_gaussian_data_by_the_mean_shift_and_keeps_the_source_exact(prediction):
    model = GaussianModel(prediction=prediction)
    z0 = model.sample_data(2, SRC)
    shift = (model.encode_prompt([TGT]).hidden - model.encode_prompt([SRC]).hidden).view(1, *model.shape)
    source, target = ddcm(model, z0, [SRC] * 2, [TGT] * 2, steps=50, guidance=1.0)
    assert float((source - z0).abs().max()) < 1e-12
    assert float(relative_error(target - z0, shift.expand_as(target)).max()) < 1e-12  # equal variances: a translation
    few = ddcm(model, z0, [SRC] * 2, [TGT] * 2, steps=4, guidance=1.0)[1]
    assert float(relative_error(few - z0, shift.expand_as(few)).max()) > 1e-3  # the few-step answer is not exact


@pytest.mark.parametrize("fresh_noise", [False, True])
def test_ddcm_source_branch_is_the_image_latent_on_the_tiny_lcm(tiny_model, fresh_noise):
    model = tiny_model("lcm")
    z0 = _latent(model)
    source, target = ddcm(model, z0, [SRC], [TGT], steps=4, guidance=1.0, fresh_noise=fresh_noise)
    assert float(relative_error(source, z0)) < 1e-6  # exact by construction, whatever the (random) network says
    assert float(relative_error(target, z0)) > 1e-2
    same = ddcm(model, z0, [SRC], [SRC], steps=4, guidance=3.0, source_guidance=3.0, fresh_noise=fresh_noise)[1]
    assert float(relative_error(same, z0)) < 1e-3  # equal prompts: nothing to edit (float32 batch noise x guidance)


def test_capturing_processor_keeps_the_output_and_records_decoder_self_attention(tiny_model):
    model = tiny_model("sd")
    x, emb = torch.randn(1, 4, 16, 16), model.encode_prompt([SRC])
    maps = []
    with capturing(model, maps):
        captured = model.forward(x, 500, emb)
    assert torch.allclose(captured, model.forward(x, 500, emb), atol=1e-5)
    assert maps and all(m.shape[-1] == m.shape[-2] for m in maps)  # self-attention only (cross has 77 keys)
    ref = torch.randn_like(x)
    assert float(energy(model, ref, ref, 500, emb, 1.0)[0]) == 0.0 < float(energy(model, x, ref, 500, emb, 1.0)[0])


def test_guide_and_rescale_guider_is_rescaled_against_cfg(tiny_model):
    model = tiny_model("sd")
    z0 = _latent(model)
    run = lambda **kw: guide_and_rescale(model, z0, [SRC], [TGT], steps=2, guidance=5.0, **kw)[1]  # noqa: E731
    # a fixed ratio fixes the guider's norm: its weight no longer matters, only the direction of grad E
    pinned = [run(scale=s, ratio_min=3.0, ratio_max=3.0) for s in (1e-3, 1e3)]
    assert float(relative_error(pinned[0], pinned[1])) < 1e-5
    free = run(scale=0.0)  # no self-guidance: plain DDIM editing from the inversion
    assert float(relative_error(pinned[0], free)) > 1e-3
    # two steps: only the last is guided (the first starts on the chain, E = 0), and a step is affine in the
    # guider, so a tiny weight lifted to ratio_min = 0.33 moves the result 0.33 / 3 as far as ratio 3 does
    moved = (run(scale=1.0) - free).norm() / (pinned[0] - free).norm()
    assert abs(float(moved) - 0.11) < 2e-3


def test_guide_and_rescale_keeps_the_background_better_than_ddim_editing(tiny_model):
    model = tiny_model("sd")
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    plain = edit(model, image, SRC, TGT, method="guide_and_rescale", steps=4, guidance=5.0, scale=0.0, full=True)
    guided = edit(model, image, SRC, TGT, method="guide_and_rescale", steps=4, guidance=5.0, full=True)
    err = lambda res: float(relative_error(res.images, res.source))  # noqa: E731
    assert err(guided) < err(plain)


def test_cli_edit_with_the_recipes_and_their_one_line_errors(pipeline_dir, photo, tmp_path, capsys):
    base = ["edit", photo, "-s", SRC, "-t", TGT, "--steps", "2", "--size", "32", "--model", pipeline_dir("lcm")]
    out = str(tmp_path / "e.png")
    assert main(base + ["--method", "ddcm", "--guidance", "1", "--opt", "fresh_noise=True", "-o", out]) == 0
    assert "ddcm: 'a red circle' -> 'a blue circle'" in capsys.readouterr().out
    assert main(base + ["--method", "guide_and_rescale", "--guidance", "3", "-o", out]) == 0
    assert (tmp_path / "e_source.png").exists()
    capsys.readouterr()  # the successful runs' notes
    for args, message in ((["--method", "ddcm", "--opt", "gamma=1"], "method ddcm has no option gamma"),
                          (["--method", "ddcm", "--opt", "fresh_noise=1"], "ddcm option fresh_noise must be True or False"),
                          (["--method", "guide_and_rescale", "--opt", "ratio_min=5"], "0 < ratio_min <= ratio_max"),
                          (["--method", "ddcm", "--blend", "red blue"], "ddcm is an editing recipe without")):
        assert main(base + args + ["-o", out]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(InversaError, match="guide_and_rescale needs a UNet"):
        guide_and_rescale(GaussianModel(prediction="flow"), torch.zeros(1, 4, 8, 8), [SRC], [TGT], steps=2)


def test_methods_lists_the_editing_recipes(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    recipes = out.split("editing recipes")[1]
    for name in ("flowedit", "ddcm", "guide_and_rescale"):
        assert f"\n{name} " in recipes
    assert "ratio_min=0.33, ratio_max=3.0" in recipes and "fresh_noise=False" in recipes
