"""PSNR / SSIM / MS-SSIM come from torchmetrics; they agree with the formulas inversa's tables were measured with."""
import pytest
import torch
import torch.nn.functional as F

from inversa.core.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, psnr, ssim, ssim_map


def _gaussian(size, sigma):
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return (g / g.sum()).float()


def _maps(a, b, window):
    """The hand-written luminance and contrast-structure maps (valid convolution) of the earlier tables."""
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2
    g, c = _gaussian(window, 1.5 * window / 11), a.shape[1]
    kx, ky = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    blur = lambda x: F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + 1e-4) / (mu_a**2 + mu_b**2 + 1e-4), (2 * cov + 9e-4) / (var_a + var_b + 9e-4))


def _reference(a, b):
    a, b = (a + 1) / 2, (b + 1) / 2
    lum, cs = _maps(a, b, 11)
    p = 3
    pa, pb = (F.pad(x, [p] * 4, mode="reflect") for x in (a, b))
    lum7, cs7 = _maps(pa, pb, 7)
    m = ms_ssim_scales(*a.shape[-2:])
    w = torch.tensor(MS_SSIM_WEIGHTS[:m], dtype=torch.float64)
    w, ms = w / w.sum(), torch.ones(a.shape[0], dtype=torch.float64)
    for k in range(m):
        l_k, c_k = (t.flatten(1).mean(1) for t in _maps(a, b, 11))
        ms = ms * ((l_k * c_k) if k == m - 1 else c_k).double().clamp_min(0) ** w[k]
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    mse = ((pa - pb)[..., p:-p, p:-p]).pow(2).flatten(1).mean(1)
    return {"psnr": 10 * torch.log10(1 / mse), "ssim": (lum * cs).flatten(1).mean(1),
            "ssim_map": (lum7 * cs7).mean(1), "ms_ssim": ms.float()}


def _photos(size):
    from skimage import data

    rows = [torch.from_numpy(getattr(data, n)()).permute(2, 0, 1).float()[None] / 255 for n in ("astronaut", "coffee",
                                                                                                "chelsea")]
    return torch.cat([F.interpolate(r, size=(size, size), mode="area") for r in rows]) * 2 - 1


@pytest.mark.parametrize("size", [64, 256])
def test_torchmetrics_agrees_with_the_hand_written_figures(size):
    a = _photos(size)
    b = (a + 0.15 * torch.randn(a.shape, generator=torch.Generator().manual_seed(size))).clamp(-1, 1)
    ref = _reference(a, b)
    got = {"psnr": psnr(a, b), "ssim": ssim(a, b), "ssim_map": ssim_map(a, b), "ms_ssim": ms_ssim(a, b)}
    for name, value in got.items():
        assert value.shape == ref[name].shape
        assert float((value - ref[name]).reshape(len(value), -1).mean(1).abs().max()) < 1e-5, name  # the tables' figures
        assert float((value - ref[name]).abs().max()) < 1e-3, name  # a pixel of the map: float32 cancellation
    assert float(ref["ssim"].min()) < 0.9 and float(psnr(a, a).min()) == float("inf")


def test_torchmetrics_pulls_no_torchvision():
    import importlib.util

    import torchmetrics

    assert torchmetrics.__version__ == "1.4.1" and importlib.util.find_spec("torchvision") is None


def test_one_scale_ms_ssim_is_ssim_as_wang_defines_it():
    """Under 32 px one scale is left: mean(l cs), which the hand-written code took as mean(l) mean(cs) (< 1e-4 apart)."""
    a = _photos(16)
    b = (a + 0.15 * torch.randn(a.shape, generator=torch.Generator().manual_seed(16))).clamp(-1, 1)
    assert torch.allclose(ms_ssim(a, b), ssim(a, b), atol=1e-6)
    assert float((ms_ssim(a, b) - _reference(a, b)["ms_ssim"]).abs().max()) < 1e-4
