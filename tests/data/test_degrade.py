import pytest
import torch

from gridit_core.data.degrade import (
    DegradeConfig,
    degrade,
    downscale,
    gaussian_blur,
    make_pair,
    opencv_sigma,
    random_blur,
    upsample,
)  # fmt: skip
from gridit_core.errors import GriditError

pytestmark = pytest.mark.unit


def frames(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("order", ["official", "low-res"])
@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_range_and_determinism(scale, order):
    cfg = DegradeConfig(scale=scale, order=order)
    hr = frames()
    lr_up, lr_small = make_pair(hr, cfg, gen(3))
    assert lr_up.shape == hr.shape and lr_small.shape == (2, 3, 16 // scale, 16 // scale)
    assert lr_up.abs().max() <= 1 and lr_small.abs().max() <= 1
    again = make_pair(hr, cfg, gen(3))
    assert torch.equal(lr_up, again[0]) and torch.equal(lr_small, again[1])
    assert not torch.equal(lr_up, make_pair(hr, cfg, gen(4))[0])
    assert torch.equal(degrade(hr, cfg, gen(5)), degrade(hr, cfg, gen(5)))
    assert degrade(hr, cfg, gen(5)).shape == lr_small.shape


def test_official_order_builds_on_the_clean_downscale():
    hr = frames()
    cfg = DegradeConfig(noise_std=(0.0, 0.0), blur_prob=0.0)
    lr_up, lr_small = make_pair(hr, cfg, gen())
    assert torch.equal(lr_small, downscale(hr, 4))
    assert torch.equal(lr_up, upsample(lr_small, 4))  # with noise and blur off only the two resizes remain


def test_sizes_that_the_scale_does_not_divide_raise():
    with pytest.raises(GriditError, match="15x16 is not divisible by the scale factor 4"):
        degrade(torch.zeros(1, 3, 15, 16), DegradeConfig(scale=4))
    with pytest.raises(GriditError, match="not divisible"):
        make_pair(torch.zeros(1, 3, 16, 18), DegradeConfig(scale=4))
    with pytest.raises(GriditError, match=r"\(N, C, H, W\)"):
        downscale(torch.zeros(3, 16, 16), 2)
    with pytest.raises(GriditError, match="odd"):
        DegradeConfig(blur_kernels=(8,))
    with pytest.raises(GriditError, match="low <= high"):
        DegradeConfig(noise_std=(15, 10))
    with pytest.raises(GriditError, match="order"):
        DegradeConfig(order="random")


@pytest.mark.parametrize("order", ["official", "low-res"])
def test_noise_std_lies_in_the_configured_range(order):
    """On a flat grey image the resizes change nothing, so what is left is the pixel noise, std 10..15 of 255."""
    cfg = DegradeConfig(noise_std=(10.0, 15.0), blur_prob=0.0, order=order)
    flat = torch.zeros(16, 3, 64, 64)
    lr_up, lr_small = make_pair(flat, cfg, gen(1))
    noisy = lr_up if order == "official" else lr_small
    std = noisy.flatten(1).std(dim=1) * 127.5  # (16,) on the 0-255 scale
    assert std.min() > 10 * 0.95 and std.max() < 15 * 1.05
    assert std.max() - std.min() > 1.5  # one std per image, not one for the batch


def test_blur_happens_with_the_configured_probability():
    x = frames(n=400, size=8, seed=2)
    out = random_blur(x, DegradeConfig(blur_prob=0.5), gen(6))
    blurred = (out != x).flatten(1).any(dim=1).float()  # (400,)
    assert abs(blurred.mean().item() - 0.5) < 0.08
    assert torch.equal(random_blur(x, DegradeConfig(blur_prob=0.0), gen(6)), x)
    assert not torch.equal(random_blur(x[:4], DegradeConfig(blur_prob=1.0), gen(6)), x[:4])


def test_gaussian_blur_keeps_flat_images_and_smooths_noise():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 9, opencv_sigma(9)), flat, atol=1e-6)
    noise = torch.randn(1, 3, 16, 16, generator=gen())
    assert gaussian_blur(noise, 15, opencv_sigma(15)).std() < 0.5 * noise.std()
    assert opencv_sigma(9) == pytest.approx(1.7) and opencv_sigma(15) == pytest.approx(2.6)
    # float64: a grouped convolution over more groups may sum in another order, by how much depends on the CPU's
    # kernels; in float64 that is < 1e-15, and the other image's sigma changes pixels by > 0.1
    batch = torch.randn(2, 3, 16, 16, generator=gen(1), dtype=torch.float64)
    one_each = torch.cat([gaussian_blur(batch[:1], 9, 1.0), gaussian_blur(batch[1:], 9, 2.0)])
    assert torch.allclose(gaussian_blur(batch, 9, torch.tensor([1.0, 2.0])), one_each, atol=1e-12, rtol=0)
    drawn = random_blur(batch, DegradeConfig(blur_prob=1.0, blur_sigma=(0.5, 2.0)), gen(2))
    assert drawn.shape == batch.shape and drawn.std() < batch.std()
    tiny = gaussian_blur(torch.randn(1, 1, 4, 4, generator=gen()), 15, 2.0)  # the pad outgrows the image
    assert tiny.shape == (1, 1, 4, 4) and torch.isfinite(tiny).all()
