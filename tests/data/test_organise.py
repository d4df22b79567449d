import json
import os

import numpy as np
import pytest
from PIL import Image

from gridit_core.data.organise import MANIFEST, GridFolder, chunk_starts, organise
from gridit_core.errors import GriditError

pytestmark = pytest.mark.unit


def write_sequence(folder, n, size, seed=0, frame=None):
    """``n`` frames ``00000.png ...`` of ``size`` (w, h): random pixels, or ``frame(i)`` -> uint8 (h, w, 3)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        pixels = frame(i) if frame else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return folder


def official_grids(folder, size):
    """The official organiser, restated: 16-frame chunks of sorted names, PIL default resize, 4x4 row-major paste."""
    names = sorted(os.listdir(folder))
    chunks = [names[i : i + 16] for i in range(0, len(names), 16)]
    grids = []
    for chunk in chunks:
        if len(chunk) < 16:
            continue  # the last partial chunk is dropped
        grid = Image.new("RGB", (4 * size, 4 * size))
        for k, name in enumerate(chunk):
            grid.paste(Image.open(folder / name).resize((size, size)), ((k % 4) * size, (k // 4) * size))
        grids.append(np.asarray(grid))
    return grids


def files_state(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write_sequence(root / "walk" / "seq_a", 35, (20, 12), seed=1)  # two full chunks and 3 frames dropped
    write_sequence(root / "walk" / "seq_b", 17, (13, 7), seed=2)  # odd size: one full chunk
    return root


def test_grids_equal_the_official_organiser(dataset, tmp_path):
    n = organise(dataset, tmp_path / "grids", rows=4, cols=4, frame_size=16, resize="stretch", progress=False)
    manifest = json.loads((tmp_path / "grids" / MANIFEST).read_text())
    official = {name: official_grids(dataset / name, 16) for name in ("walk/seq_a", "walk/seq_b")}
    assert n == 3 == sum(len(g) for g in official.values())
    assert [(e["sequence"], e["start"]) for e in manifest["grids"]] == [("walk/seq_a", 0), ("walk/seq_a", 16), ("walk/seq_b", 0)]
    for entry in manifest["grids"]:
        ours = np.asarray(Image.open(tmp_path / "grids" / entry["file"]))
        assert ours.shape == (64, 64, 3)
        np.testing.assert_array_equal(ours, official[entry["sequence"]][entry["start"] // 16])


def test_manifest_and_grid_folder_read_back(dataset, tmp_path):
    dst = tmp_path / "grids"
    organise(dataset, dst, rows=2, cols=3, frame_size=8, progress=False)
    manifest = json.loads((dst / MANIFEST).read_text())
    assert {k: manifest[k] for k in ("rows", "cols", "frame_size", "stride", "overlap", "resize")} == {
        "rows": 2, "cols": 3, "frame_size": 8, "stride": 1, "overlap": 0, "resize": "stretch"}
    assert [e["start"] for e in manifest["grids"]] == [0, 6, 12, 18, 24, 0, 6]  # 35 frames: 5 chunks of 6; 17: 2
    assert manifest["grids"][1]["frames"] == [6, 7, 8, 9, 10, 11]
    assert sorted(p.name for p in dst.iterdir()) == [f"{i:06d}.png" for i in range(7)] + [MANIFEST]
    grids = GridFolder(dst, 2, 3, 8)
    assert len(grids) == 7
    x = grids[3]
    assert x.shape == (3, 16, 24)
    expected = np.asarray(Image.open(dst / "000003.png"), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_array_equal(x.numpy(), expected)  # the same float32 arithmetic as the loader
    with pytest.raises(GriditError, match="holds 2x3 grids of 8px frames, not 2x2"):
        GridFolder(dst, 2, 2, 8)


def test_stride_and_overlap_pick_the_right_frames(tmp_path):
    def solid(i):  # frame i is a 4x4 square of value i
        return np.full((4, 4, 3), i, dtype=np.uint8)

    write_sequence(tmp_path / "src" / "clip", 20, (4, 4), frame=solid)
    dst = tmp_path / "grids"
    organise(tmp_path / "src", dst, rows=2, cols=2, frame_size=4, stride=2, overlap=1, resize="none", progress=False)
    # span 7 frames, chunks 6 frames apart; each chunk starts on the last frame of the one before
    expected = [[0, 2, 4, 6], [6, 8, 10, 12], [12, 14, 16, 18]]
    manifest = json.loads((dst / MANIFEST).read_text())
    assert [e["frames"] for e in manifest["grids"]] == expected
    for entry, frames in zip(manifest["grids"], expected):
        grid = np.asarray(Image.open(dst / entry["file"]))[..., 0]
        assert [int(grid[r * 4 + 1, c * 4 + 2]) for r in range(2) for c in range(2)] == frames
        assert len(np.unique(grid)) == 4  # every cell is one solid frame, none blended
    assert chunk_starts(20, 4, stride=1, overlap=3) == list(range(17))


def test_center_crop_keeps_the_aspect(tmp_path):
    def bands(i):  # 30x10: red, green, blue bands of 10x10 each
        img = np.zeros((10, 30, 3), dtype=np.uint8)
        for k in range(3):
            img[:, 10 * k : 10 * (k + 1), k] = 255
        return img

    write_sequence(tmp_path / "src" / "clip", 4, (30, 10), frame=bands)
    for policy in ("center-crop", "stretch"):
        organise(tmp_path / "src", tmp_path / policy, rows=2, cols=2, frame_size=8, resize=policy, progress=False)
    cropped = np.asarray(Image.open(tmp_path / "center-crop" / "000000.png"), dtype=float)[:8, :8]
    stretched = np.asarray(Image.open(tmp_path / "stretch" / "000000.png"), dtype=float)[:8, :8]
    assert (cropped[:, 2:6] == [0, 255, 0]).all()  # the square middle band fills the cell
    assert cropped[..., 1].mean() > 200 and cropped[..., 0].mean() < 40 and cropped[..., 2].mean() < 40
    assert stretched[:, 0, 0].mean() > 200 and stretched[:, -1, 2].mean() > 200  # squeezed: all three bands show


def test_existing_output_is_refused_and_kept(dataset, tmp_path):
    dst = tmp_path / "grids"
    organise(dataset, dst, rows=4, cols=4, frame_size=8, progress=False)
    before = files_state(dst)
    with pytest.raises(GriditError, match="already holds grids .*--overwrite"):
        organise(dataset, dst, rows=4, cols=4, frame_size=16, progress=False)
    assert files_state(dst) == before

    # a bad frame found midway through an --overwrite run leaves the earlier grids as they were
    (dataset / "walk" / "seq_c").mkdir()
    good = (dataset / "walk" / "seq_a" / "00000.png").read_bytes()
    for i in range(16):
        (dataset / "walk" / "seq_c" / f"{i:05d}.png").write_bytes(good if i != 9 else good[: len(good) // 2])
    with pytest.raises(GriditError, match=r"cannot read image .*seq_c.00009\.png"):
        organise(dataset, dst, rows=4, cols=4, frame_size=16, overwrite=True, progress=False)
    assert files_state(dst) == before

    (dataset / "walk" / "seq_c" / "00009.png").write_bytes(good)
    assert organise(dataset, dst, rows=4, cols=4, frame_size=16, overwrite=True, progress=False) == 4
    assert json.loads((dst / MANIFEST).read_text())["frame_size"] == 16
    assert sorted(p.name for p in dst.iterdir()) == ["000000.png", "000001.png", "000002.png", "000003.png", MANIFEST]

    foreign = tmp_path / "foreign"  # numbered PNGs without a manifest are somebody's results too
    foreign.mkdir()
    (foreign / "000000.png").write_bytes(good)
    with pytest.raises(GriditError, match="already holds grids"):
        organise(dataset, foreign, rows=4, cols=4, frame_size=8, progress=False)
    assert (foreign / "000000.png").read_bytes() == good


def truncated(root):
    write_sequence(root / "seq", 16, (8, 8))
    png = root / "seq" / "00003.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])


def mixed_sizes(root):
    write_sequence(root / "seq", 16, (8, 8))
    Image.new("RGB", (9, 8)).save(root / "seq" / "00005.png")


@pytest.mark.parametrize(
    "make, options, message",
    [
        (None, {}, r"dataset path .*src does not exist"),
        (lambda root: root.mkdir(), {}, r"no image sequences found under .*src"),
        (truncated, {}, r"cannot read image .*00003\.png"),
        (mixed_sizes, {"resize": "none"}, r"frame seq\[5\] is 9x8, expected 8x8; pass a resize policy"),
        (lambda root: write_sequence(root / "seq", 15, (8, 8)), {}, r"16 frames a 4x4 grid .* needs \(longest: 15\)"),
        (lambda root: write_sequence(root / "seq", 20, (8, 8)), {"stride": 2}, r"31 frames a 4x4 grid with stride 2"),
        (lambda root: write_sequence(root / "seq", 20, (8, 8)), {"overlap": 16}, r"chunk overlap must be in 0..15"),
    ],
    ids=["missing", "empty", "truncated", "mixed-sizes", "too-short", "too-short-strided", "overlap"],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, make, options, message):
    if make:
        make(tmp_path / "src")
    with pytest.raises(GriditError, match=message) as err:
        organise(tmp_path / "src", tmp_path / "out", rows=4, cols=4, frame_size=8, progress=False, **options)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_output_inside_the_dataset_is_refused(dataset):
    with pytest.raises(GriditError, match="lies inside the dataset"):
        organise(dataset, dataset / "grids", rows=4, cols=4, frame_size=8, progress=False)
