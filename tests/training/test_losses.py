"""Stage-1 noise modes: one level a grid, one a cell (Diffusion Forcing), or leading cells given clean as a
continuation grid is sampled; the grid DiT takes them all without new parameters."""

import pytest
import torch

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.grid import frames_to_grid, grid_to_frames
from gridit_core.sampling import FAMILIES
from gridit_core.training import TrainConfig
from gridit_core.training.losses import GridAsClip, context_levels, sequence_losses

pytestmark = pytest.mark.unit


class Spy(torch.nn.Module):
    """A grid model that keeps the timesteps it was called with and outputs a fixed function of its input."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(t.clone())
        return x * 0.5


def grids(n=3):
    return torch.rand(n, 3, 8, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 2x3 grids of 4 px cells


def test_grid_as_clip_round_trips_frames():
    x = torch.randn(2, 6, 3, 4, 4)
    net = GridAsClip(lambda g, t, y=None: g, 2, 3)
    assert torch.equal(net(x, torch.zeros(2, 6, dtype=torch.long)), x)
    assert torch.equal(frames_to_grid(grid_to_frames(grids(), 2, 3), 2, 3), grids())


@pytest.mark.parametrize("mode, shape", [("shared", (3,)), ("per-frame", (3, 6)), ("context", (3, 6))])
def test_each_mode_calls_the_grid_model_with_its_levels(mode, shape):
    diffusion, spy = Diffusion(DiffusionConfig(num_steps=100)), Spy()
    out = sequence_losses(diffusion, spy, grids(), mode, rows=2, cols=3, generator=torch.Generator().manual_seed(1))
    (t,) = spy.seen
    assert t.shape == shape and out["loss"].shape == (3,) and torch.isfinite(out["loss"]).all()
    if mode == "per-frame":
        assert len(t.unique()) > 3  # independent levels


def test_context_levels_give_leading_cells_clean_and_the_rest_one_level():
    t, context = context_levels(2000, 6, 1000, torch.Generator().manual_seed(0))
    assert (context[:, 1:] <= context[:, :-1]).all()  # leading cells only
    assert set(context.sum(1).tolist()) == set(range(6))  # 0 to 5 of 6 cells: at least one is generated
    assert t[context].max() <= round(0.015 * 999) and t[context].min() == 0
    rest = torch.where(context, -1, t)
    for row in rest:
        values = row[row >= 0].unique()
        assert len(values) == 1  # the generated cells share one level


def test_context_cells_do_not_count_in_the_loss():
    diffusion = Diffusion(DiffusionConfig(num_steps=100, prediction="x0"))
    x, g = grids(), torch.Generator().manual_seed(3)
    t, context = context_levels(3, 6, 100, torch.Generator().manual_seed(3))
    out = sequence_losses(diffusion, Spy(), x, "context", rows=2, cols=3, generator=torch.Generator().manual_seed(3))
    frames = grid_to_frames(x, 2, 3)
    changed = frames.clone()
    changed[context] = 5.0  # the context cells' own values change: the loss does not
    again = sequence_losses(diffusion, Spy(), frames_to_grid(changed, 2, 3), "context", rows=2, cols=3, generator=g)
    assert context.any() and not context.all() and torch.allclose(out["mse"], again["mse"], rtol=0, atol=1e-6)


def test_the_grid_family_trains_with_every_noise_mode():
    assert FAMILIES["grid"].noise_modes == ("shared", "per-frame", "context")
    assert TrainConfig(noise="context").noise == "context" and TrainConfig().noise == "shared"
    with pytest.raises(Exception, match="trains with noise shared or per-frame or context"):
        TrainConfig(noise="pyramid")
