"""Stage 1 then stage 2: a low-resolution sequence, super-resolved frame by frame and streamed to disk in batches.

``sample_two_stage`` writes each stage-1 frame to ``frames_lr/`` as soon as it is final and, every ``sr_batch``
frames of a sequence, the super-resolved batch to its ``frames/``; ``upscale_folder`` runs stage 2 alone on a folder of frames. Both
super-resolve the frames as written to disk (8-bit PNG), and batch ``b`` is seeded with ``batch_seed(seed, b)``, so
``upscale_folder`` on ``frames_lr/`` with the same seed, batch size and settings gives back ``frames/`` exactly.
Memory holds one batch (plus the GIFs' 1-byte palette frames), whatever the length.
"""

from pathlib import Path

from tqdm.auto import tqdm

from gridit_core.data.sources import FolderSequence
from gridit_core.errors import GriditError
from gridit_core.sampling.config import SampleConfig
from gridit_core.sampling.families import generate_frames, prepare_sample_dir, write_sample_record
from gridit_core.sampling.upscale import SAMPLE_AUG, check_upscale_settings, upscale_frames
from gridit_core.util.image import frames_to_tensor
from gridit_core.util.io import FrameWriter, prepare_output_dir

LR_FRAMES, LR_GIF = "frames_lr", "sequence_lr.gif"


def batch_seed(seed, b):
    """The seed of stage-2 batch ``b``: a different one for every batch of every seed (below a million batches)."""
    return (seed * 1_000_003 + b) % 2**64


def _upscale_batch(writer, model, diffusion, images, b, seed, **opts):
    """Super-resolve a batch of PIL frames (batch ``b``, seeded ``batch_seed(seed, b)``) into ``writer``."""
    lr = frames_to_tensor(images)  # (B, 3, h, w)
    for frame in upscale_frames(model, diffusion, lr, seed=batch_seed(seed, b), batch_size=len(images), **opts):
        writer.add(frame)  # (3, H, W)


def sample_two_stage(
    stage1_model, stage1_diffusion, stage1_cfg, sr_model, sr_diffusion, sr_cfg, n_frames, out_dir, *,
    overwrite=False, sr_batch=16, aug_level=SAMPLE_AUG, sr_steps=50, sr_sampler="ddim", sr_eta=0.0, seed=0, fps=8,
    progress=True, codec=None, sr_codec=None, n_sequences=1, **stage1_kwargs,
):  # fmt: skip
    """Sample ``n_sequences`` sequences of exactly ``n_frames`` frames together with stage 1 and super-resolve every
    frame with stage 2.

    Each sequence's folder (``families.sequence_folders``: ``out_dir`` for one, ``out_dir/seq_000``, ... for more)
    gets ``frames_lr/*.png`` and ``sequence_lr.gif`` (stage 1), ``frames/*.png`` and ``sequence.gif`` (stage 2);
    ``out_dir`` gets ``sampling.json``; returns ``out_dir``. ``stage1_kwargs`` go to ``sampling.generate_frames``
    (``settings``, ``device``, ``callback`` and ``SampleConfig`` fields). ``codec`` and ``sr_codec`` are the stages'
    VAE codecs (``training.load_codec``; None in pixel space): the stages pass each other RGB frames either way. The
    two stages' frame sizes and every setting are checked before the folder is touched.
    """
    lr_side, hr_side, scale = stage1_cfg.frame_size, sr_cfg.frame_size, sr_cfg.scale
    if hr_side != lr_side * scale:
        raise GriditError(
            f"the stage-2 model makes {hr_side}px frames from {hr_side // scale}px ones (x{scale}), "
            f"but stage 1 makes {lr_side}px frames"
        )
    opts = dict(aug_level=aug_level, steps=sr_steps, sampler=sr_sampler, eta=sr_eta, codec=sr_codec)
    check_upscale_settings(sr_model, sr_diffusion, scale, batch_size=sr_batch, **opts)
    frames = generate_frames(stage1_model, stage1_diffusion, n_frames, rows=stage1_cfg.rows, cols=stage1_cfg.cols,
                             seed=seed, progress=progress, codec=codec, n_sequences=n_sequences,
                             **stage1_kwargs)  # checks stage-1 settings; fmt: skip
    folders = prepare_sample_dir(out_dir, overwrite, n_sequences)
    given = {k: v for k, v in stage1_kwargs.items() if k in SampleConfig.names()}
    write_sample_record(out_dir, stage1_model, n_frames, stage1_kwargs.get("settings"), rows=stage1_cfg.rows,
                        cols=stage1_cfg.cols, **given)  # fmt: skip
    lr_writers = [FrameWriter(d, fps=fps, frames=LR_FRAMES, gif_name=LR_GIF) for d in folders]
    hr_writers = [FrameWriter(d, fps=fps) for d in folders]
    pending, batches = [[] for _ in folders], [0] * len(folders)  # each sequence's frames waiting, batches done
    opts |= dict(scale=scale, residual=sr_cfg.residual)

    def flush(k):
        _upscale_batch(hr_writers[k], sr_model, sr_diffusion, pending[k], batches[k], seed, **opts)
        bar.update(len(pending[k]))
        pending[k], batches[k] = [], batches[k] + 1

    with tqdm(total=n_frames * n_sequences, desc="upscaling", unit="frame", disable=not progress) as bar:
        for frame in frames:  # (n_sequences, C, H, W): each frame is on disk before stage 2 sees it
            for k, f in enumerate(frame):
                pending[k].append(lr_writers[k].add(f))
                if len(pending[k]) == sr_batch:
                    flush(k)
        for k in range(len(folders)):
            if pending[k]:
                flush(k)
    for writer in lr_writers + hr_writers:
        writer.close()
    return Path(out_dir)


def upscale_folder(
    sr_model, sr_diffusion, sr_cfg, input_dir, out_dir, *, overwrite=False, batch_size=16, aug_level=SAMPLE_AUG,
    steps=50, sampler="ddim", eta=0.0, seed=0, fps=8, progress=True, codec=None,
):  # fmt: skip
    """Super-resolve every image file of ``input_dir`` (natural order) into ``out_dir/frames/`` and ``sequence.gif``.

    ``codec``: the model's VAE codec (``training.load_codec``), None in pixel space.

    Every frame is read and its size checked (the stage-2 input, ``frame_size / scale`` square) before the folder is
    touched; then frames are read again a batch at a time. Returns ``(out_dir, number of frames)``.
    """
    scale = sr_cfg.scale
    opts = dict(aug_level=aug_level, steps=steps, sampler=sampler, eta=eta, codec=codec)
    h, w = check_upscale_settings(sr_model, sr_diffusion, scale, batch_size=batch_size, **opts)
    source = FolderSequence(input_dir)
    if source.folder.resolve() == (Path(out_dir) / "frames").resolve():
        raise GriditError(f"the input {source.folder} is the output's frames/ folder, which writing clears; write elsewhere")
    for i, path in enumerate(source.files):
        got = source.frame(i).size  # decoded in full, so a corrupt file is found now too
        if got != (w, h):
            raise GriditError(
                f"frame {path} is {got[0]}x{got[1]}, but the x{scale} stage-2 model takes {w}x{h} frames "
                f"(it makes {w * scale}x{h * scale})"
            )
    prepare_output_dir(out_dir, overwrite, ["frames", "sequence.gif"])
    writer = FrameWriter(out_dir, fps=fps)
    n = len(source)
    with tqdm(total=n, desc="upscaling", unit="frame", disable=not progress) as bar:
        for b, i in enumerate(range(0, n, batch_size)):
            images = source.frames(range(i, min(i + batch_size, n)))
            _upscale_batch(writer, sr_model, sr_diffusion, images, b, seed, scale=scale, residual=sr_cfg.residual, **opts)
            bar.update(len(images))
    return writer.close(), n
