"""Sequence sampling checked with oracles: a sampler that knows the true sequence (timeline), and a model that knows
the true x0 (the clamp)."""

import pytest
import torch

from gridit_core.data.degrade import upsample
from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.grid import frames_to_grid, grid_to_frames
from gridit_core.models.codec import Codec, IdentityCodec, LatentCodec
from gridit_core.sampling import generate_frames, grids
from gridit_core.sampling.grids import SequencePlan
from gridit_core.sampling.upscale import x0_range

pytestmark = pytest.mark.unit

STEP = 0.01  # frame k of the true sequence is the constant image -1 + STEP * k


class LinearOracle:
    """Stands in for ``grids.sample``: fills a grid with the true frames of a sequence whose frame ``k`` is the
    constant ``-1 + STEP * k``, reading where the grid sits in time from its first known cell (the start grid: 0)."""

    def __init__(self, rows, cols):
        self.rows, self.cols, self.starts = rows, cols, []

    def __call__(self, diffusion, model, shape, *, known=None, known_mask=None, **_):
        n, c, h, w = shape
        start = 0
        if known is not None:
            cells = grid_to_frames(known_mask.expand(n, c, h, w), self.rows, self.cols)[0].flatten(1).all(1)
            first = int(cells.nonzero()[0])  # the first known cell
            value = grid_to_frames(known, self.rows, self.cols)[0, first, 0, 0, 0].item()
            start = round((value + 1) / STEP) - first
        self.starts.append(start)
        k = torch.arange(start, start + self.rows * self.cols, dtype=torch.float32)
        frames = (-1 + STEP * k).reshape(1, -1, 1, 1, 1).expand(n, -1, c, h // self.rows, w // self.cols)
        return frames_to_grid(frames.contiguous(), self.rows, self.cols)


class Shape:
    def __init__(self, c, h, w):
        self.in_channels, self.config = c, type("Config", (), {"image_size": (h, w)})()


@pytest.mark.parametrize("rows,cols,n", [(4, 4, 64), (4, 4, 37), (3, 2, 40), (3, 3, 5), (3, 4, 20)])
def test_inbetweened_sequence_is_uniform_in_time(monkeypatch, rows, cols, n):
    oracle = LinearOracle(rows, cols)
    monkeypatch.setattr(grids, "sample", oracle)
    frames = generate_frames(Shape(3, 4 * rows, 4 * cols), Diffusion(), n, rows=rows, cols=cols, interpolate=True,
                             steps=1, progress=False)  # fmt: skip
    times = [round((f[0, 0, 0, 0].item() + 1) / STEP) for f in frames]
    assert times == list(range(n))  # every frame once, in order, one time step apart
    plan = SequencePlan(n, rows, cols, rows * cols - cols, interpolate=True)
    assert len(oracle.starts) == plan.total_grids  # no grid beyond the plan
    # keyframe grids start (rows-1)*cols frames apart; in-between grids start at the keyframe row before them
    span = (rows - 1) * cols
    assert sorted(set(oracle.starts)) == [span * j for j in range(len(set(oracle.starts)))]


@pytest.mark.parametrize("rows,cols,overlap,n", [(2, 2, 2, 30), (4, 4, 12, 64), (3, 2, 0, 13)])
def test_continued_sequence_is_uniform_in_time(monkeypatch, rows, cols, overlap, n):
    monkeypatch.setattr(grids, "sample", LinearOracle(rows, cols))
    frames = generate_frames(Shape(3, 4 * rows, 4 * cols), Diffusion(), n, rows=rows, cols=cols, overlap=overlap,
                             steps=1, progress=False)  # fmt: skip
    times = [round((f[0, 0, 0, 0].item() + 1) / STEP) for f in frames]
    if overlap:
        assert times == list(range(n))
    else:  # without conditioning every grid starts the sequence again: the oracle has nothing to go on
        assert times == [i % (rows * cols) for i in range(n)]


class Unclamped(Codec):
    """A codec like a VAE's: no range for x0 (latents have std about 1); identity maps, to watch the latents."""

    x0_range = None

    def _encode(self, x, sample, generator):
        return x

    def _decode(self, z):
        return z


class X0Oracle(torch.nn.Module):
    """Predicts the true x0 whatever it is given (an x0-prediction model that has learned everything)."""

    def __init__(self, x0):
        super().__init__()
        self.register_buffer("x0", x0)
        self.in_channels, self.config = x0.shape[1], type("Config", (), {"image_size": tuple(x0.shape[-2:])})()

    def forward(self, x, t, y=None):
        return self.x0.expand_as(x)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("codec,clamped", [(Unclamped(), False), (IdentityCodec(), True)])
def test_x0_is_clamped_to_the_codecs_range_only(sampler, codec, clamped):
    x0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # std 1, like SD-VAE latents
    assert (x0.abs() > 1).float().mean() > 0.2  # a third or so lies outside [-1, 1]
    diffusion = Diffusion(DiffusionConfig(num_steps=100, schedule="cosine", prediction="x0"))
    final = []
    frames = generate_frames(X0Oracle(x0), diffusion, 4, rows=2, cols=2, sampler=sampler, steps=10, progress=False,
                             codec=codec, callback=lambda info: final.append(info["x"]))  # fmt: skip
    list(frames)
    expected = x0.clamp(-1, 1) if clamped else x0
    assert torch.allclose(final[-1], expected, atol=1e-5, rtol=0)


def test_latent_codecs_have_no_x0_range_and_pixels_do():
    assert LatentCodec.x0_range is None
    assert IdentityCodec().x0_range == (-1.0, 1.0)


def test_stage2_residual_range_keeps_the_frame_in_pixels():
    lr_up = upsample(torch.rand(2, 3, 4, 4) * 2 - 1, 4)
    lo, hi = x0_range(IdentityCodec(), lr_up, residual=True)
    assert torch.allclose(lo + lr_up, torch.full_like(lr_up, -1.0), atol=1e-6, rtol=0)
    assert torch.allclose(hi + lr_up, torch.ones_like(lr_up), atol=1e-6, rtol=0)
    assert x0_range(IdentityCodec(), lr_up, residual=False) == (-1.0, 1.0)
    assert x0_range(Unclamped(), lr_up, residual=True) is None
