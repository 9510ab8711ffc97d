"""PIE's learned metrics loaded through the real local-weights path, from tiny random networks."""
import pytest
import torch

from inversa.bench.learned_metrics import (clip_score, dino_self_similarity, load_learned, squeezenet_lpips,
                                           structure_distance)
from inversa.core.errors import InversaError


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny SqueezeNet-LPIPS (trunk and linear layers in two files), DINO ViT and CLIP folders."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    from inversa.tiny.vocab import make_tokenizer

    root = tmp_path_factory.mktemp("metric_weights")
    torch.manual_seed(0)
    net = squeezenet_lpips()
    (root / "lpips").mkdir()
    save_file({k: v.contiguous() for k, v in net.features.state_dict(prefix="features.").items()},
              str(root / "lpips" / "squeezenet1_1.safetensors"))
    torch.save({f"lin{k}.model.1.weight": lin.weight.abs() for k, lin in enumerate(net.lins)},  # LPIPS keeps w >= 0
               root / "lpips" / "squeeze.pth")
    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             image_size=32, patch_size=8), add_pooling_layer=False)
    vit.save_pretrained(root / "dino")
    tok = make_tokenizer(str(root / "vocab"))
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    return {"lpips": str(root / "lpips"), "structure": str(root / "dino"), "clip": str(root / "clip")}


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _normed(x, mean, std):
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_learned_metrics_load_and_follow_pie_definitions(weights):
    learned = load_learned(weights)
    assert learned.skipped == {}
    a, b = _images(1), _images(1, seed=1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    inside = torch.where(mask.bool(), b, a)  # differs from a only inside the edited region
    same = learned.scores(a, a, mask, "a red circle")
    assert same["lpips"] == 0 and same["structure"] == 0
    masked = learned.scores(a, inside, mask, "a red circle")
    assert masked["lpips"] == 0 and masked["structure"] > 0  # background LPIPS ignores the edit; structure does not
    assert learned.scores(a, b, mask, "a red circle")["lpips"] > 0
    full = learned.scores(a, b, torch.ones_like(mask), "a red circle")
    assert full["clip_edited"] == pytest.approx(full["clip_whole"], abs=1e-4)  # the whole image is the edit region
    assert 0 <= full["clip_whole"] <= 100


def test_structure_distance_uses_the_last_layers_keys(weights):
    vit = load_learned({**weights, "lpips": None, "clip": None}).dino
    x = (_images(2) + 1) / 2
    sim = dino_self_similarity(vit, x)
    assert sim.shape == (2, 17, 17) and torch.allclose(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 17))
    with torch.no_grad():  # by hand: the last layer's input, its pre-attention norm, its key projection
        pixels = _normed(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet; already at the ViT's size
        hidden = vit(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        last = vit.encoder.layer[-1] if hasattr(vit, "encoder") else vit.layers[-1]
        keys = [m for n, m in last.named_modules() if n.endswith(("k_proj", "attention.key"))][0]
        k = torch.nn.functional.normalize(keys(last.layernorm_before(hidden)), dim=-1)
    assert torch.allclose(sim, k @ k.transpose(1, 2), atol=1e-5)
    d = structure_distance(vit, x, x.flip(0))
    assert d[0] == pytest.approx(float((sim[0] - sim[1]).pow(2).mean()), rel=1e-5) and d[0] == pytest.approx(d[1])


def test_clip_score_is_100_times_the_clamped_cosine(weights):
    model, tok = load_learned({**weights, "lpips": None, "structure": None}).clip
    x = (_images(1) + 1) / 2
    score = clip_score((model, tok), x, ["a blue star"])
    with torch.no_grad():
        ids = tok(["a blue star"], return_tensors="pt")
        txt = model.get_text_features(**ids)
        img = model.get_image_features(pixel_values=_normed(x, (0.48145466, 0.4578275, 0.40821073),
                                                            (0.26862954, 0.26130258, 0.27577711)))
    img, txt = (getattr(v, "pooler_output", v) for v in (img, txt))
    assert float(score[0]) == pytest.approx(max(0.0, 100 * float(torch.cosine_similarity(img, txt)[0])), abs=1e-3)


def test_learned_metrics_skip_without_weights_and_refuse_wrong_folders(weights, tmp_path, monkeypatch):
    for env in ("INVERSA_LPIPS_SQUEEZE_WEIGHTS", "INVERSA_DINO_WEIGHTS", "INVERSA_CLIP_WEIGHTS"):
        monkeypatch.delenv(env, raising=False)
    none = load_learned({})
    assert set(none.skipped) == {"lpips", "structure", "clip"} and "--dino-weights" in none.skipped["structure"]
    assert none.scores(_images(1), _images(1), torch.zeros(1, 1, 32, 32), "x") == dict.fromkeys(
        ("lpips", "structure", "clip_whole", "clip_edited"))
    monkeypatch.setenv("INVERSA_DINO_WEIGHTS", weights["structure"])
    assert load_learned({}).dino is not None
    with pytest.raises(InversaError, match="not a transformers model folder"):
        load_learned({"clip": str(tmp_path)})
    with pytest.raises(InversaError, match="do not exist"):
        load_learned({"lpips": str(tmp_path / "nope")})
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "squeeze.pth")
    with pytest.raises(InversaError, match="expected SqueezeNet 1.1 'features.\\*' and LPIPS 'lin0..lin6'"):
        load_learned({"lpips": str(tmp_path)})
    with pytest.raises(InversaError, match="cannot load CLIP"):
        load_learned({"clip": weights["structure"]})  # a ViT folder is not a CLIP model


def test_bench_edit_task_scores_learned_metrics_from_local_weights(weights, pipeline_dir, tmp_path, capsys):
    import sqlite3

    from inversa.bench.pie import write_shapes_pie
    from inversa.cli.main import main

    write_shapes_pie(str(tmp_path / "pie"), n=1, size=64, kinds=("colour",))
    store = str(tmp_path / "r.sqlite")
    assert main(["bench", "--task", "edit", "--data", f"pie:{tmp_path / 'pie'}", "--model", pipeline_dir("sd"),
                 "--methods", "direct", "--steps", "2", "--blend", "mask", "-o", store,
                 "--lpips-squeeze-weights", weights["lpips"], "--dino-weights", weights["structure"],
                 "--clip-weights", weights["clip"]]) == 0
    out = capsys.readouterr().out
    assert "bg LPIPS x1e3 | structure x1e3 | CLIP whole | CLIP edited" in out and "skipped" not in out
    with sqlite3.connect(store) as db:
        rows = dict(db.execute("SELECT method, lpips FROM edit_results").fetchall())
    assert rows["direct"] == pytest.approx(rows["vae_roundtrip"], abs=1e-6)  # same background as the VAE round trip
    assert main(["bench", "--task", "edit", "--data", f"pie:{tmp_path / 'pie'}", "--model", pipeline_dir("sd"),
                 "--dino-weights", str(tmp_path), "-o", store]) == 2
    assert "not a transformers model folder" in capsys.readouterr().err
