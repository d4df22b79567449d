import copy
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid, grid_to_frames
from gridit_core.models import DiT, DiTConfig
from gridit_core.sampling import generate_frames, grids, sample_sequence
from gridit_core.sampling.grids import SequencePlan

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=(16, 24), patch_size=4, in_channels=3, rows=2, cols=3, learn_sigma=False, depth=1, hidden_size=32, num_heads=2))
    return model.eval(), Diffusion(DiffusionConfig(num_steps=50))


def fake_model(c, h, w):
    return SimpleNamespace(in_channels=c, config=SimpleNamespace(image_size=(h, w)))


class FakeSampler:
    """Stands in for ``diffusion.sample``: records what each grid was conditioned on, fills the rest with fresh frames."""

    def __init__(self, rows=2):
        self.rows, self.calls, self.counter = rows, [], 0

    def __call__(self, diffusion, model, shape, *, known=None, known_mask=None, callback=None, steps=1, **_):
        n, c, h, w = shape
        frames = torch.empty(n, 6, c, h // self.rows, w // (6 // self.rows))
        for i in range(6):  # every frame gets its own constant value in [-1, 1), distinct even as uint8
            self.counter += 1
            frames[:, i] = (self.counter % 250) / 125 - 1
        grid = frames_to_grid(frames, self.rows, 6 // self.rows)
        if known is not None:
            grid = torch.where(known_mask, known, grid)
        self.calls.append((known, known_mask))
        for i in range(steps):
            callback({"i": i})
        return grid


@pytest.mark.parametrize(
    "n,rows,overlap,interpolate",
    [(1, 2, 3, False), (6, 2, 3, False), (7, 2, 3, False), (20, 2, 4, False), (13, 2, 0, False), (9, 3, 4, True), (40, 3, 2, True)],
)
def test_exact_length_and_conditioning(monkeypatch, n, rows, overlap, interpolate):
    fake = FakeSampler(rows)
    monkeypatch.setattr(grids, "sample", fake)
    cols = 6 // rows
    frames = list(generate_frames(fake_model(3, 4 * rows, 4 * cols), Diffusion(), n, rows=rows, cols=cols, overlap=overlap,
                                  interpolate=interpolate, steps=2, progress=False))
    assert len(frames) == n
    plan = SequencePlan(n, rows, cols, overlap, interpolate)
    assert len(fake.calls) <= plan.total_grids
    values = [f[0, 0, 0, 0].item() for f in frames]
    assert len(set(values)) == n, "a frame was emitted twice"
    if not interpolate:
        # each continuation grid is conditioned on exactly the last `overlap` frames emitted before it
        emitted = 6
        for known, mask in fake.calls[1:]:
            if overlap == 0:
                assert known is None
                continue
            cond = grid_to_frames(known, rows, cols)[0, :overlap, 0, 0, 0].tolist()
            assert cond == values[emitted - overlap : emitted]
            assert grid_to_frames(mask.expand(1, 1, 8, 12), rows, cols)[0, :, 0].flatten(1).all(1).tolist() == [True] * overlap + [False] * (6 - overlap)
            emitted += 6 - overlap


def test_inbetweening_keeps_keyframe_rows_in_order(monkeypatch):
    fake = FakeSampler(rows=3)
    monkeypatch.setattr(grids, "sample", fake)
    frames = list(generate_frames(fake_model(3, 12, 8), Diffusion(), 12, rows=3, cols=2, overlap=4, interpolate=True, steps=1, progress=False))
    values = [f[0, 0, 0, 0].item() for f in frames]
    start = fake.calls[0]
    assert start[0] is None
    # first emitted row is the first keyframe row; an in-between grid then holds rows (key0, key1) as its first and last rows
    inbetween_known = grid_to_frames(fake.calls[1][0], 3, 2)[0, :, 0, 0, 0].tolist()
    assert inbetween_known[:2] == values[:2] and inbetween_known[4:] == values[4:6]


def test_plan_counts_match_the_official_setting():
    plan = SequencePlan(64, 4, 4, overlap=12)
    assert plan.continuation_grids == 12  # 16 + 12*4 = 64
    assert SequencePlan(1, 4, 4, 12).total_grids == 1
    with pytest.raises(GriditError, match="at least 1"):
        SequencePlan(0, 4, 4, 12)
    with pytest.raises(GriditError, match="overlap"):
        SequencePlan(10, 2, 2, 4)


def test_real_model_is_deterministic_and_writes_exactly_n_files(tiny, tmp_path):
    model, diffusion = tiny
    kw = dict(rows=2, cols=3, overlap=3, steps=3, progress=False)
    a = sample_sequence(model, diffusion, 8, seed=1, **kw)
    b = sample_sequence(model, diffusion, 8, seed=1, **kw)
    c = sample_sequence(model, diffusion, 8, seed=2, **kw)
    assert a.shape == (1, 8, 3, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = sample_sequence(model, diffusion, 8, seed=1, out_dir=tmp_path / "run", **kw)
    files = sorted((out / "frames").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(8)]
    with Image.open(out / "sequence.gif") as gif:
        assert gif.n_frames == 8
    with pytest.raises(GriditError, match="already holds results"):
        sample_sequence(model, diffusion, 8, seed=1, out_dir=tmp_path / "run", **kw)
    assert len(list((out / "frames").iterdir())) == 8  # nothing lost by the refusal


def test_a_thousand_frames_stream_to_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(grids, "sample", FakeSampler())
    out = sample_sequence(fake_model(3, 8, 12), Diffusion(), 1203, rows=2, cols=3, overlap=3, steps=1, out_dir=tmp_path / "long", progress=False)
    files = sorted((out / "frames").iterdir())
    assert len(files) == 1203 and files[-1].name == "001202.png"
    with Image.open(out / "sequence.gif") as gif:
        assert gif.n_frames == 1203


class CallNumber:
    """Stands in for ``grids.sample``: every new cell of call ``k`` holds the value ``k / 100``; known cells stay."""

    def __init__(self):
        self.calls = 0

    def __call__(self, diffusion, model, shape, *, known=None, known_mask=None, **_):
        grid = torch.full(shape, self.calls / 100)
        self.calls += 1
        return grid if known is None else torch.where(known_mask, known, grid)


@pytest.mark.parametrize("n,rows,cols,overlap,interpolate", [(20, 2, 2, 2, False), (23, 3, 3, 6, False),
                                                              (30, 3, 2, 4, True), (33, 4, 2, 6, True)])  # fmt: skip
def test_seams_are_where_another_grid_takes_over(monkeypatch, n, rows, cols, overlap, interpolate):
    monkeypatch.setattr(grids, "sample", CallNumber())
    frames = generate_frames(fake_model(3, 4 * rows, 4 * cols), Diffusion(), n, rows=rows, cols=cols, overlap=overlap,
                             interpolate=interpolate, steps=1, progress=False)  # fmt: skip
    made_by = [round(float(f[0, 0, 0, 0]) * 100) for f in frames]  # which call made each frame
    seams = [t for t in range(1, n) if made_by[t] != made_by[t - 1]]
    assert seams == SequencePlan(n, rows, cols, overlap, interpolate).seams() and seams


class Timesteps(torch.nn.Module):
    """A grid DiT that keeps the timesteps it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []
        self.in_channels, self.config, self.arch = model.in_channels, model.config, "grid"

    def forward(self, x, t, y=None):
        self.seen.append(t.clone())
        return self.model(x, t, y)


def test_clean_context_gives_the_known_cells_their_own_timestep(tiny):
    model, diffusion = copy.deepcopy(tiny[0]), tiny[1]
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():  # adaLN-Zero starts as the identity: give every weight a value so timesteps matter
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)
    spy = Timesteps(model)
    frames = torch.stack(list(generate_frames(spy, diffusion, 10, steps=3, overlap=2, conditioning="clean",
                                              progress=False)), 1)  # fmt: skip
    assert frames.shape == (1, 10, 3, 8, 8)
    start, grids = spy.seen[:3], spy.seen[3:]  # a start grid, then continuation grids of 6 cells, 2 of them known
    assert all(t.shape == (1,) for t in start) and len(grids) == 3  # 6 frames, then one grid of 4 new ones
    assert all(t.shape == (1, 6) and (t[0, :2] == 0).all() and (t[0, 2:] == t[0, 2]).all() for t in grids)
    noisy = Timesteps(model)
    list(generate_frames(noisy, diffusion, 10, steps=3, overlap=2, conditioning="clean", context_noise=0.1, progress=False))
    assert all((t[0, :2] == round(0.1 * 49)).all() for t in noisy.seen[3:])  # context at a tenth of the process
    plain = Timesteps(model)
    same = torch.stack(list(generate_frames(plain, diffusion, 10, steps=3, overlap=2, progress=False)), 1)
    assert all(t.shape == (1,) for t in plain.seen) and not torch.equal(same, frames)  # replacement: one level a grid
    guided = torch.stack(list(generate_frames(model, diffusion, 10, steps=3, overlap=2, guidance=2.0, progress=False)), 1)
    assert torch.equal(guided[:, :6], same[:, :6]) and not torch.equal(guided, same)  # the start grid has nothing to guide
