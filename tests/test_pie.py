"""PIE-Bench: RLE masks, the folder layout, the masked metrics, the edit task, and edits that keep the background."""
import json
import math
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from inversa.bench.pie import background_metrics, decode_rle, encode_rle, load_pie, write_shapes_pie
from inversa.cli.main import main
from inversa.core.errors import InversaError
from inversa.editing.edit import edit


def test_rle_decoding_marks_runs_row_major_and_forces_the_borders():
    mask = decode_rle([6, 3, 17, 1], shape=(4, 5))
    expected = np.array([[1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 1],  # 6, 7, 8 (and the borders)
                         [1, 0, 0, 0, 1],
                         [1, 1, 1, 1, 1]], dtype=bool)  # 17 is on the bottom border anyway
    assert (mask == expected).all()
    inner = decode_rle([6, 3, 12, 1], shape=(4, 5), borders=False)
    assert inner.sum() == 4 and inner[1, 1:4].all() and inner[2, 2]
    assert encode_rle(inner) == [6, 3, 12, 1]
    with pytest.raises(InversaError, match="odd number"):
        decode_rle([1, 2, 3])


def test_background_metrics_against_hand_computed_values():
    source = -torch.ones(1, 3, 4, 4)  # black in [0, 1]
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # edited region: top-left 2x2
    edited = source.clone()
    edited[..., 0, 0] = 1.0  # white inside the mask: not counted
    edited[..., 3, 3] = 0.0  # grey (0.5) outside: squared error 0.25 at 1 of 16 pixels
    m = background_metrics(source, edited, mask)
    assert m["bg_mse"] == pytest.approx(0.25 / 16)
    assert m["bg_psnr"] == pytest.approx(10 * math.log10(16 / 0.25))
    inside_only = background_metrics(source, torch.where(mask.bool(), edited, source), mask)
    assert inside_only["bg_mse"] == 0 and inside_only["bg_psnr"] == 1e9 and inside_only["bg_ssim"] == pytest.approx(1.0)


def _write_pie(folder, entries):
    (folder / "annotation_images" / "0_random").mkdir(parents=True)
    Image.fromarray(np.full((512, 512, 3), 90, np.uint8)).save(folder / "annotation_images" / "0_random" / "a.jpg")
    (folder / "mapping_file.json").write_text(json.dumps(entries))


def test_pie_folder_strips_brackets_and_reads_type_words_and_mask(tmp_path):
    _write_pie(tmp_path, {"000000000001": {
        "image_path": "0_random/a.jpg", "original_prompt": "a [cat] sitting on a mat",
        "editing_prompt": "a [dog] sitting on a mat", "editing_instruction": "make the cat a dog",
        "editing_type_id": "1", "blended_word": "cat dog", "mask": [512 * 256 + 256, 128]}})
    (item,) = load_pie(str(tmp_path))
    assert (item.source_prompt, item.target_prompt) == ("a cat sitting on a mat", "a dog sitting on a mat")
    assert item.edit_type == "1" and item.blended_words == ("cat", "dog")
    mask = item.mask(64)[0, 0]  # row 256, columns 256-383: row 32, columns 32-47 at 64, plus the borders (< half)
    assert mask.sum() == 0  # one 512-row run covers an eighth of each 8x8 cell: below half, so nothing at 64
    assert decode_rle(item.rle)[256, 256:384].all() and item.load(64).shape == (1, 3, 64, 64)
    assert load_pie(str(tmp_path), types={"6"}) == []


def test_pie_folder_errors(tmp_path):
    with pytest.raises(InversaError, match="no mapping_file.json"):
        load_pie(str(tmp_path))
    _write_pie(tmp_path, {"1": {"image_path": "0_random/a.jpg", "original_prompt": "x"}})
    with pytest.raises(InversaError, match="lacks editing_prompt, mask"):
        load_pie(str(tmp_path))


def test_shapes_pie_set_has_the_four_edit_types_with_bracketed_prompts(tmp_path):
    write_shapes_pie(str(tmp_path), n=1, size=64)
    raw = json.loads((tmp_path / "mapping_file.json").read_text())
    assert sorted(e["x_kind"] for e in raw.values()) == ["background", "colour", "position", "shape"]
    colour = next(e for e in raw.values() if e["x_kind"] == "colour")
    assert colour["editing_type_id"] == "6" and colour["original_prompt"].count("[") == 1
    items = {i.extra["x_kind"]: i for i in load_pie(str(tmp_path))}
    obj = items["colour"].mask(64, "x_source_mask")
    assert torch.equal(items["colour"].mask(64), obj)  # a colour edit touches the object only
    assert float((items["background"].mask(64) + obj == 1).float().mean()) > 0.98  # ties at the outline aside
    assert "[" not in items["shape"].source_prompt and items["shape"].blended_words[0] != items["shape"].blended_words[1]


def test_edit_with_a_mask_keeps_the_source_branch_outside_it(tiny_model):
    model = tiny_model("sd")
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:44] = 1
    res = edit(model, image, "a red circle", "a blue circle", method="direct", steps=3, mask=mask, full=True)
    free = edit(model, image, "a red circle", "a blue circle", method="direct", steps=3)
    assert torch.equal(res.images[..., mask[0, 0] == 0], res.source[..., mask[0, 0] == 0])
    assert not torch.allclose(res.images[..., 16:40, 20:44], res.source[..., 16:40, 20:44], atol=1e-3)
    assert not torch.allclose(free, res.source, atol=1e-3)


def test_edit_blend_words_must_be_in_the_prompts(tiny_model):
    model = tiny_model("sd")
    image = torch.zeros(1, 3, 64, 64)
    with pytest.raises(InversaError, match="'dog' is not in the prompt 'a blue circle'"):
        edit(model, image, "a red circle", "a blue circle", steps=2, blend="circle dog")
    with pytest.raises(InversaError, match="SOURCE_WORD TARGET_WORD"):
        edit(model, image, "a red circle", "a blue circle", steps=2, blend="circle")
    res = edit(model, image, "a red circle", "a blue circle", steps=2, blend="red blue", full=True)
    assert res.images.shape == (1, 3, 64, 64)


def test_bench_edit_task_writes_rows_resumes_and_refuses_other_data(pipeline_dir, tmp_path, capsys):
    write_shapes_pie(str(tmp_path / "pie"), n=1, size=64)
    store = str(tmp_path / "r.sqlite")
    args = ["bench", "--task", "edit", "--data", f"pie:{tmp_path / 'pie'}", "--model", pipeline_dir("sd"),
            "--methods", "direct", "--steps", "2", "--blend", "mask", "-o", store]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "change colour: PSNR / success" in out.out and "lpips skipped" in out.out
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT method, status, bg_psnr FROM edit_results ORDER BY image").fetchall()
    assert len(rows) == 8 and all(r[1] == "ok" for r in rows)
    vae = [r[2] for r in rows if r[0] == "vae_roundtrip"]
    direct = [r[2] for r in rows if r[0] == "direct"]
    assert direct == pytest.approx(vae, abs=0.02)  # exact source branch + mask: the VAE round trip's background
    assert main(args) == 0 and "0 edit rows written, 8 already done" in capsys.readouterr().err
    assert main(["bench", "--task", "edit", "--data", str(tmp_path), "-o", store]) == 2
    assert "needs --data pie:DIR" in capsys.readouterr().err


def test_natural_prompts_map_onto_the_embedded_template():
    from inversa.tiny.prompts import template_pair

    assert template_pair("a red circle on a blue background", "a green circle on a blue background") == (
        "a large red circle on a blue background, center", "a large green circle on a blue background, center")
    assert template_pair("small red star in the top right on a white and orange background", "a purple one")[1] == \
        "a small purple star on a white and orange background, top right"
    caption = "a large red circle on a blue gradient background, center"
    assert template_pair(caption, caption.replace("circle", "square")) == (caption, caption.replace("circle", "square"))
    assert template_pair("a cat", "a dog") == ("a cat", "a dog")  # nothing the model knows: unchanged


def test_readme_edit_example_changes_only_the_circle(tmp_path, capsys):
    """The README's command on the embedded model: the circle turns green, the blue background stays."""
    from inversa.bench.pie import background_metrics
    from inversa.io.images import load_image
    from inversa.tiny import shapes as S

    rgb, circle = S.render(S.nominal("circle", "red", "large", "center"))
    Image.fromarray(rgb).save(tmp_path / "circle.png")
    assert main(["edit", str(tmp_path / "circle.png"), "-s", "a red circle on a blue background", "-t",
                 "a green circle on a blue background", "--method", "direct", "-o", str(tmp_path / "out.png")]) == 0
    assert "prompts in the embedded model's template" in capsys.readouterr().err
    source, edited = load_image(str(tmp_path / "circle.png"), 64, []), load_image(str(tmp_path / "out.png"), 64, [])
    grown = torch.from_numpy(S.dilate(circle, 2)).float()[None, None]
    assert background_metrics(source, edited, grown)["bg_psnr"] > 30  # 21 dB with the source prompt as negative
    pixels = ((edited[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert S.nearest_colour(np.median(pixels[~S.dilate(~circle, 2)], 0)) == "green"
    assert S.nearest_colour(np.median(pixels[~S.dilate(circle, 3)], 0)) == "blue"
