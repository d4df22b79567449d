"""Tests for gridit_core.quality: PSNR, SSIM against hand computations, bicubic baseline, compare_sr."""

import math

import numpy as np
import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.metrics.fidelity import bicubic_baseline, compare_sr, gaussian_window, psnr, ssim

pytestmark = pytest.mark.unit


def images(n=2, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 2 - 1


def test_psnr_identical_is_inf_and_known_mse_gives_known_db():
    x = images()
    assert torch.isinf(psnr(x, x)).all()
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 on image 0
    y[1] += 0.2  # MSE 0.04 on image 1
    got = psnr(x, y)
    assert got.shape == (2,)
    expected = [10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.04)]  # data range 2 -> peak^2 = 4
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert psnr(x, y, data_range=1.0)[0].item() == pytest.approx(20.0, abs=1e-6)


def test_gaussian_window_is_normalised_and_centred():
    w = gaussian_window()
    assert w.shape == (11, 11)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[5, 5] == w.max() and torch.equal(w, w.T) and torch.equal(w, w.flip(0))


def test_ssim_identical_is_one_and_noise_lowers_it_symmetrically():
    x = images()
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    s = ssim(x, noisy)
    assert s.shape == (2,) and (s < 0.95).all()
    assert torch.allclose(s, ssim(noisy, x), atol=1e-12)
    noisier = (x + 0.6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert (ssim(x, noisier) < s).all()


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.5, -0.25  # exact in float32
    x, y = torch.full((1, 3, 12, 12), a), torch.full((1, 3, 12, 12), b)
    c1 = (0.01 * 2.0) ** 2  # no variance: the structure term is c2 / c2 = 1
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


def test_ssim_matches_a_loop_over_window_positions():
    x, y = images(n=1, c=2, h=12, w=13, seed=2), images(n=1, c=2, h=12, w=13, seed=3)
    win = gaussian_window().numpy()
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    values = []
    for ch in range(2):
        for i in range(12 - 10):  # 2 x 3 valid window positions
            for j in range(13 - 10):
                p, q = (t[0, ch, i : i + 11, j : j + 11].double().numpy() for t in (x, y))
                mp, mq = (win * p).sum(), (win * q).sum()
                vp, vq = (win * (p - mp) ** 2).sum(), (win * (q - mq) ** 2).sum()
                cov = (win * (p - mp) * (q - mq)).sum()
                values.append((2 * mp * mq + c1) * (2 * cov + c2) / ((mp * mp + mq * mq + c1) * (vp + vq + c2)))
    assert ssim(x, y).item() == pytest.approx(np.mean(values), abs=1e-9)


def test_bad_shapes_are_gridit_errors():
    with pytest.raises(GriditError, match="differ in shape"):
        psnr(images(h=16), images(h=8))
    with pytest.raises(GriditError, match=r"\(N, C, H, W\)"):
        ssim(images()[0], images()[0])
    with pytest.raises(GriditError, match="smaller than the SSIM window"):
        ssim(images(h=8, w=8), images(h=8, w=8))
    assert ssim(images(h=8, w=8), images(h=8, w=8), win_size=7).shape == (2,)


def test_bicubic_baseline_upsamples_and_keeps_constants():
    lr = images(h=4, w=5)
    up = bicubic_baseline(lr, 4)
    assert up.shape == (2, 3, 16, 20) and up.min() >= -1 and up.max() <= 1
    flat = torch.full((1, 3, 4, 4), 0.25)
    assert torch.allclose(bicubic_baseline(flat, 2), torch.full((1, 3, 8, 8), 0.25), atol=1e-6)
    with pytest.raises(GriditError, match="positive integer"):
        bicubic_baseline(lr, 1.5)


def test_compare_sr_reports_sr_beside_bicubic():
    hr = images(n=3, h=16, w=16)
    lr = torch.nn.functional.avg_pool2d(hr, 4)  # (3, 3, 4, 4)
    perfect = compare_sr(hr, hr, lr, 4)
    assert set(perfect) == {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "ssim_window", "n"}
    assert math.isinf(perfect["psnr"]) and perfect["ssim"] == pytest.approx(1.0)
    assert math.isfinite(perfect["psnr_bicubic"]) and perfect["ssim_bicubic"] < 1 and perfect["n"] == 3
    bicubic = compare_sr(bicubic_baseline(lr, 4), hr, lr, 4)
    assert bicubic["psnr"] == bicubic["psnr_bicubic"]  # the same computation on the same frames
    assert bicubic["ssim"] == bicubic["ssim_bicubic"]
    small = compare_sr(hr[..., :8, :8], hr[..., :8, :8], lr[..., :2, :2], 4)
    assert small["ssim_window"] == 7 and small["ssim"] == pytest.approx(1.0)
    with pytest.raises(GriditError, match="ground truth"):
        compare_sr(hr, hr, lr, 2)
