import numpy as np
import pytest
import torch
from PIL import Image

from gridit_core.data import (
    ArraySequence,
    FolderSequence,
    GifSequence,
    GridClips,
    VideoSequence,
    builtin,
    find_sequences,
    load_image,
    natural_key,
    open_dataset,
    resize_frame,
    split_sequences,
)
from gridit_core.data.builtin import BouncingConfig, bouncing_shapes, moving_digits
from gridit_core.errors import GriditError
from gridit_core.grid import grid_to_frames
from gridit_core.util.image import frames_to_tensor, tensor_to_uint8

pytestmark = pytest.mark.unit


def _frames(t, h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _write_folder(folder, frames, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"frame_{i}.png" for i in range(len(frames))]
    for name, f in zip(names, frames):
        Image.fromarray(f).save(folder / name)
    return folder


def test_natural_key_orders_numbers_by_value():
    names = ["frame_10.png", "frame_9.png", "frame_1.png", "Frame_2.png", "a"]
    assert sorted(names, key=natural_key) == ["a", "frame_1.png", "Frame_2.png", "frame_9.png", "frame_10.png"]


def test_folder_sequence_reads_frames_in_natural_order(tmp_path):
    frames = _frames(11)
    _write_folder(tmp_path / "seq", frames)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    seq = FolderSequence(tmp_path / "seq")
    assert len(seq) == 11 and seq.name == "seq"
    assert [p.name for p in seq.files][9:] == ["frame_9.png", "frame_10.png"]
    got = seq.frames([10, 2, -1])
    assert all(im.mode == "RGB" for im in got)
    assert np.array_equal(np.asarray(got[0]), frames[10]) and np.array_equal(np.asarray(got[1]), frames[2])
    with pytest.raises(IndexError, match="index out of range"):
        seq.frame(11)


def test_gif_sequence_returns_every_frame_as_rgb(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    images = [Image.new("RGB", (8, 6), c) for c in colours]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=50)
    seq = GifSequence(tmp_path / "clip.gif")
    assert len(seq) == 4 and seq.name == "clip"
    got = seq.frames([3, 1])
    assert got[0].mode == "RGB" and got[0].size == (8, 6)
    assert tuple(np.asarray(got[0])[0, 0]) == colours[3] and tuple(np.asarray(got[1])[0, 0]) == colours[1]


def test_find_sequences_walks_folders_and_gifs(tmp_path):
    _write_folder(tmp_path / "b" / "clip10", _frames(3))
    _write_folder(tmp_path / "b" / "clip9", _frames(2))
    _write_folder(tmp_path / "a", _frames(4))
    _write_folder(tmp_path / ".hidden", _frames(2))
    images = [Image.new("RGB", (8, 6), (i * 50, 0, 0)) for i in range(3)]
    images[0].save(tmp_path / "b" / "anim.gif", save_all=True, append_images=images[1:])
    seqs = find_sequences(tmp_path)
    assert [s.name for s in seqs] == ["a", "b/anim.gif", "b/clip9", "b/clip10"]
    assert [len(s) for s in seqs] == [4, 3, 2, 3]
    # A folder of frames, and a single GIF, are sequences themselves.
    assert [s.name for s in find_sequences(tmp_path / "a")] == ["a"]
    assert len(find_sequences(tmp_path / "b" / "anim.gif")[0]) == 3


def test_find_sequences_errors(tmp_path):
    with pytest.raises(GriditError, match="does not exist"):
        find_sequences(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GriditError, match="no image sequences found"):
        find_sequences(tmp_path / "empty")
    Image.new("RGB", (4, 4)).save(tmp_path / "one.png")
    with pytest.raises(GriditError, match="not a sequence"):
        find_sequences(tmp_path / "one.png")


def test_truncated_or_missing_image_gives_one_line_error(tmp_path):
    Image.fromarray(_frames(1, 32, 32)[0]).save(tmp_path / "full.png")
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "half.png").write_bytes(raw[: len(raw) // 2])
    for name in ("half.png", "gone.png"):
        with pytest.raises(GriditError, match=f"cannot read image .*{name}") as err:
            load_image(tmp_path / name)
        assert "\n" not in str(err.value)


def test_video_without_imageio_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "imageio", None)  # makes `import imageio.v3` fail
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(GriditError, match=r"imageio\[ffmpeg\]"):
        find_sequences(tmp_path / "clip.mp4")


def test_video_sequence_decodes_with_imageio(tmp_path):
    pytest.importorskip("imageio")
    images = [Image.new("RGB", (8, 6), (i * 60, 0, 0)) for i in range(4)]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:])
    seq = VideoSequence(tmp_path / "clip.gif")  # any format imageio reads takes the same path as a video
    assert len(seq) == 4
    assert [np.asarray(f)[0, 0, 0] for f in seq.frames([3, 0, 2])] == [180, 0, 120]


def test_resize_policies():
    img = Image.fromarray(_frames(1, 30, 50)[0])
    stretched = resize_frame(img, (12, 16), "stretch")
    assert np.array_equal(np.asarray(stretched), np.asarray(img.resize((16, 12), Image.BICUBIC)))
    crop = resize_frame(img, 10, "center-crop")
    assert crop.size == (10, 10)
    # The crop keeps the aspect: it equals the middle of the image scaled so its height is 10.
    scaled = np.asarray(img.resize((17, 10), Image.BICUBIC))
    assert np.array_equal(np.asarray(crop), scaled[:, 3:13])
    assert resize_frame(img, (30, 50), "none") is img
    with pytest.raises(GriditError, match="is 50x30, expected 16x12; pass a resize policy"):
        resize_frame(img, (12, 16), "none")
    with pytest.raises(GriditError, match="unknown resize policy"):
        resize_frame(img, 8, "squash")


def test_tensor_round_trip():
    frames = _frames(3)
    x = frames_to_tensor([Image.fromarray(f) for f in frames])
    assert x.shape == (3, 3, 6, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(tensor_to_uint8(x), frames)
    assert tensor_to_uint8(torch.full((3, 2, 2), 5.0)).max() == 255  # clamped, not wrapped


def test_bouncing_shapes_is_deterministic_and_stays_inside():
    cfg = BouncingConfig(frame_size=16, length=40, n_balls=2)
    a, b, c = bouncing_shapes(3, cfg, seed=1), bouncing_shapes(3, cfg, seed=1), bouncing_shapes(3, cfg, seed=2)
    assert a.frames.shape == (3, 40, 16, 16, 3) and a.frames.dtype == np.uint8
    assert a.positions.shape == (3, 40, 2, 2) and a.radii.shape == (3, 2) and a.colours.shape == (3, 2, 3)
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)
    r = a.radii[:, None, :, None]
    assert np.all(a.positions >= r - 1e-9) and np.all(a.positions <= 16 - r + 1e-9)


def test_bouncing_velocity_constant_between_bounces_and_reversed_at_walls():
    d = bouncing_shapes(4, BouncingConfig(frame_size=16, length=60, speed=(2.0, 2.5)), seed=3)
    bounces = 0
    for n in range(4):
        lo, hi = d.radii[n, 0], 16 - d.radii[n, 0]
        for axis in range(2):
            v = d.velocities[n, 0, axis]
            for t in range(59):
                p0, p1 = d.positions[n, t, 0, axis], d.positions[n, t + 1, 0, axis]
                if lo <= p0 + v <= hi:  # no wall in the way: the ball moves by exactly its velocity
                    assert p1 == pytest.approx(p0 + v)
                else:  # reflected about the wall it hit, and moving the other way from then on
                    wall = lo if p0 + v < lo else hi
                    assert p1 == pytest.approx(2 * wall - (p0 + v))
                    v, bounces = -v, bounces + 1
    assert bounces >= 8


def test_bouncing_drawn_centroid_matches_positions():
    d = bouncing_shapes(3, BouncingConfig(frame_size=24, length=20), seed=5)
    w = d.frames.max(-1).astype(float)  # (N, T, H, W)
    centres = np.arange(24) + 0.5
    cy = (w.sum(-1) * centres).sum(-1) / w.sum((-1, -2))
    cx = (w.sum(-2) * centres).sum(-1) / w.sum((-1, -2))
    err = np.hypot(cy - d.positions[..., 0, 0], cx - d.positions[..., 0, 1])
    assert err.max() < 0.5
    area = w.sum((-1, -2)) / d.colours[:, None, 0].max(-1)  # coverage of a soft disc: pi (r^2 + 1/12)
    assert np.allclose(area, np.pi * (d.radii[:, None, 0] ** 2 + 1 / 12), rtol=0.03)
    assert set(map(tuple, d.colours[:, 0])) <= set(map(tuple, builtin.PALETTE))


def test_bouncing_fixed_colour_and_bad_radius():
    d = bouncing_shapes(2, BouncingConfig(frame_size=16, length=4, colours=(200, 10, 10), radius=(3, 3)))
    assert np.all(d.colours == (200, 10, 10)) and np.all(d.radii == 3)
    with pytest.raises(GriditError, match="radius"):
        bouncing_shapes(1, BouncingConfig(frame_size=8, radius=(4, 5)))


def test_moving_digits_shape_and_motion():
    x = moving_digits(2, length=10, frame_size=24, n_digits=2, seed=0)
    assert x.shape == (2, 10, 24, 24, 3) and x.dtype == np.uint8
    assert np.array_equal(x[..., 0], x[..., 2])  # grey
    assert x.max() > 200 and (x > 0).mean() < 0.5
    assert np.array_equal(x, moving_digits(2, length=10, frame_size=24, n_digits=2, seed=0))
    assert not np.array_equal(x[:, 0], x[:, -1])  # they move


def test_grid_clips_items_are_the_source_frames():
    frames = _frames(21, 6, 6, seed=1)
    clips = GridClips([ArraySequence("s", frames)], rows=2, cols=2, frame_size=6, stride=2, random_offset=False)
    assert clips.span == 7 and len(clips) == 3
    g = clips[1]
    assert g.shape == (3, 12, 12) and g.dtype == torch.float32
    cells = tensor_to_uint8(grid_to_frames(g, 2, 2))  # (4, H, W, 3)
    assert np.array_equal(cells, frames[7:14:2])


def test_grid_clips_random_offset_is_deterministic_and_disjoint():
    seq = ArraySequence("s", _frames(30, 4, 4))
    clips = GridClips([seq], rows=2, cols=2, frame_size=4, seed=3)  # span 4: 7 windows, 2 spare frames
    assert len(clips) == 7
    drawn = set()
    for epoch in range(4):
        clips.set_epoch(epoch)
        starts = [clips.frame_indices(i)[1][0] for i in range(7)]
        assert all(b - a >= 4 for a, b in zip(starts, starts[1:])) and starts[-1] + 4 <= 30
        assert all(0 <= s - 4 * i <= 2 for i, s in enumerate(starts))
        twin = GridClips([seq], rows=2, cols=2, frame_size=4, seed=3)
        twin.set_epoch(epoch)
        assert torch.equal(clips[5], twin[5])  # same seed and epoch, same item
        drawn.add(tuple(starts))
    assert len(drawn) > 1  # a new epoch moves the windows
    fixed = GridClips([seq], rows=2, cols=2, frame_size=4, random_offset=False)
    assert [fixed.frame_indices(i)[1][0] for i in range(7)] == [0, 4, 8, 12, 16, 20, 24]


def test_grid_clips_skips_short_and_errors_when_all_short():
    seqs = [ArraySequence("long", _frames(8)), ArraySequence("short", _frames(3))]
    clips = GridClips(seqs, rows=2, cols=2, frame_size=(6, 8), resize="none")
    assert clips.skipped == ["short"] and len(clips) == 2
    msg = r"no sequence has the 7 frames a 2x2 grid with stride 2 needs \(longest: 3\)"
    with pytest.raises(GriditError, match=msg):
        GridClips(seqs[1:], rows=2, cols=2, frame_size=6, stride=2)


def test_grid_clips_mixed_sizes_need_a_resize_policy(tmp_path):
    folder = _write_folder(tmp_path / "mixed", [*_frames(3, 6, 8), _frames(1, 5, 8)[0]])
    clips = GridClips([FolderSequence(folder)], rows=2, cols=2, frame_size=(6, 8), resize="none")
    with pytest.raises(GriditError, match=r"frame mixed\[3\] is 8x5, expected 8x6"):
        clips[0]
    assert GridClips([FolderSequence(folder)], 2, 2, 4)[0].shape == (3, 8, 8)


def test_split_sequences_is_deterministic_and_keeps_train():
    seqs = [ArraySequence(f"seq{i}", _frames(1, 2, 2)) for i in range(40)]
    train, val = split_sequences(seqs, 0.25, seed=0)
    again = split_sequences(list(reversed(seqs)), 0.25, seed=0)
    assert {s.name for s in val} == {s.name for s in again[1]}
    assert 3 <= len(val) <= 20 and len(train) + len(val) == 40
    assert {s.name for s in val} != {s.name for s in split_sequences(seqs, 0.25, seed=1)[1]}
    one_train, one_val = split_sequences(seqs[:1], 0.9)
    assert len(one_train) == 1 and one_val == []


def test_open_dataset_builtins_and_paths(tmp_path):
    train = open_dataset("builtin:bouncing", 2, 2, 16, n_sequences=3, split="train")
    val = open_dataset("builtin:bouncing", 2, 2, 16, n_sequences=3, split="val")
    assert train[0].shape == (3, 32, 32) and len(train) >= 3 * 4
    assert not torch.equal(train[0], val[0])
    assert open_dataset("builtin:digits", 1, 2, 8, n_sequences=2, split="all")[0].shape == (3, 8, 16)
    with pytest.raises(GriditError, match="bouncing, digits"):
        open_dataset("builtin:clouds", 2, 2, 8)
    for i in range(3):
        _write_folder(tmp_path / f"s{i}", _frames(5))
    clips = open_dataset(tmp_path, 2, 2, 6, split="all")
    assert len(clips) == 3 and clips[0].shape == (3, 12, 12)
    with pytest.raises(GriditError, match="unknown split"):
        open_dataset(tmp_path, 2, 2, 6, split="test")
