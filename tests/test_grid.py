import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.grid import GridLayout, frames_to_grid, grid_to_frames

pytestmark = pytest.mark.unit


def numbered_frames(t, c=3, h=4, w=6):
    """Frame i is filled with the value i, so every pixel says which frame it came from."""
    return torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, c, h, w).clone()


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (4, 4), (3, 1)])
def test_row_major_placement(rows, cols):
    h, w = 4, 6
    grid = frames_to_grid(numbered_frames(rows * cols, h=h, w=w), rows, cols)
    assert grid.shape == (3, rows * h, cols * w)
    for i in range(rows * cols):
        r, c = i // cols, i % cols
        cell = grid[:, r * h : (r + 1) * h, c * w : (c + 1) * w]
        assert torch.all(cell == i)


def test_round_trip_and_batched_forms():
    frames = torch.randn(5, 2, 6, 3, 8, 10)  # two leading batch dimensions
    grid = frames_to_grid(frames, 2, 3)
    assert grid.shape == (5, 2, 3, 16, 30)
    assert torch.equal(grid_to_frames(grid, 2, 3), frames)
    for b in range(5):
        assert torch.equal(grid[b, 1], frames_to_grid(frames[b, 1], 2, 3))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(GriditError, match="cannot fill a 2x2 grid"):
        frames_to_grid(torch.zeros(3, 3, 4, 4), 2, 2)
    with pytest.raises(GriditError, match="does not split"):
        grid_to_frames(torch.zeros(3, 9, 8), 2, 2)


@pytest.mark.parametrize("rows,cols,fh,fw,patch", [(4, 4, 16, 16, 2), (2, 3, 8, 12, 4), (3, 2, 6, 6, 3), (1, 5, 4, 8, 1)])
def test_token_maps_agree_with_patchified_grid(rows, cols, fh, fw, patch):
    layout = GridLayout(rows, cols, fh, fw, patch)
    grid = frames_to_grid(numbered_frames(rows * cols, c=1, h=fh, w=fw), rows, cols)[0]  # (GH, GW)
    gh, gw = layout.token_grid
    # the frame each token covers, read off the image the way a DiT patchifies it (row-major tokens)
    seen = grid.reshape(gh, patch, gw, patch)[:, 0, :, 0].reshape(-1).long()
    assert torch.equal(layout.token_frames(), seen)
    tokens = torch.arange(layout.num_tokens)
    f, y, x = layout.token_to_frame(tokens)
    assert torch.equal(layout.frame_to_token(f, y, x), tokens)
    assert int(y.max()) == fh // patch - 1 and int(x.max()) == fw // patch - 1


def test_layout_rejects_patch_that_does_not_divide():
    with pytest.raises(GriditError, match="not divisible by the patch size 4"):
        GridLayout(2, 2, 18, 16, 4)


def test_cell_mask_marks_exactly_the_cells():
    layout = GridLayout(2, 3, 4, 5)
    mask = layout.cell_mask([0, 4])
    frames = grid_to_frames(mask, 2, 3)[:, 0]  # (T, H, W)
    assert frames[0].all() and frames[4].all()
    assert not frames[[1, 2, 3, 5]].any()
