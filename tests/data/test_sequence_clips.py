"""Clips of consecutive frames (T, C, H, W) for the sequence models, cut like the grid model's grids."""

import pytest
import torch

from gridit_core.data import GridClips, SequenceClips, open_clips, open_dataset
from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid

pytestmark = pytest.mark.unit


def test_clips_are_the_grids_frames():
    grids = open_dataset("builtin:bouncing", 2, 3, 16, n_sequences=3, seed=1)
    clips = open_clips("builtin:bouncing", 6, 16, n_sequences=3, seed=1)
    assert isinstance(clips, SequenceClips) and isinstance(grids, GridClips)
    assert len(clips) == len(grids) == 30  # 10 windows of 6 frames in each of 3 sequences of 64 frames
    for i in (0, 5, 29):
        clip = clips[i]
        assert clip.shape == (6, 3, 16, 16)
        assert torch.equal(frames_to_grid(clip, 2, 3), grids[i])


def test_clip_stride_and_offsets_stay_inside_the_sequence():
    clips = open_clips("builtin:digits", 4, 16, stride=3, n_sequences=2, seed=0)
    assert clips.span == 10
    for epoch in range(3):
        clips.set_epoch(epoch)
        for i in range(len(clips)):
            si, idx = clips.frame_indices(i)
            assert idx == list(range(idx[0], idx[0] + 10, 3)) and idx[-1] < len(clips.sequences[si])


def test_a_clip_longer_than_every_sequence_is_refused():
    with pytest.raises(GriditError, match=r"no sequence has the 100 frames a clip of 100 frames with stride 1 needs"):
        SequenceClips(open_clips("builtin:bouncing", 4, 16, n_sequences=1).sequences, 100, 16)
