"""``gridit eval``: every metric of a set of sampled sequences against real data, in one JSON and one table.

Samples are what ``gridit sample`` writes (``OUT/frames/``; with stage 2 the super-resolved frames), a folder of such
outputs, a folder of sequence folders or GIFs, or one GIF. Real data is anything ``--data`` takes. Metrics:
``coherence`` (bouncing balls, or moving digits for ``builtin:digits``; ``metrics.coherence``, ``metrics.digits``),
``fvd`` (I3D features of clips, ``metrics.i3d``) and ``fid`` (Inception features of frames, ``metrics.inception``),
each beside real, shuffled and frozen real sequences. Real-set FVD/FID statistics are cached (``metrics.frechet``);
the networks are the files passed, else those ``gridit weights`` registered (``metrics.weights_setup``).
"""

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes, moving_digits
from gridit_core.data.real import is_real, real_identity, real_sequences
from gridit_core.data.sources import FolderSequence, find_sequences, natural_key, resize_frame
from gridit_core.errors import GriditError
from gridit_core.metrics.coherence import BallReference, coherence_many, freeze_frames, shuffle_frames, with_baselines
from gridit_core.metrics.digits import DigitReference, digit_coherence_many
from gridit_core.metrics.frechet import FeatureStats, cached_stats, frechet_distance, stats_dir
from gridit_core.sampling.families import SAMPLE_RECORD
from gridit_core.training.checkpoints import read_config

METRICS = ("coherence", "fvd", "fid")
COHERENCE_KINDS = ("balls", "digits")
REAL_SEED = 1234  # held-out real sequences (the quickstart's); references use another seed
BASELINES = ("real", "shuffled", "frozen")


def read_sequences(path):
    """uint8 sequences ``[(T, H, W, 3), ...]`` and their names from a sample output folder (``frames/``), a folder
    of them, a folder of sequence folders or GIFs, or a GIF; all frames must share one size."""
    path = Path(path)
    outputs = []
    if path.is_dir():
        outputs = [path] if (path / "frames").is_dir() else [d for d in path.iterdir() if (d / "frames").is_dir()]
    if outputs:
        found = [FolderSequence(d / "frames", d.name) for d in sorted(outputs, key=lambda d: natural_key(d.name))]
    else:
        found = find_sequences(path)
    arrays = [np.stack([np.asarray(im) for im in s.frames(range(len(s)))]) for s in found]
    sizes = sorted({a.shape[1:3] for a in arrays})
    if len(sizes) > 1:
        raise GriditError(f"the sequences in {path} differ in frame size: {sizes}")
    return arrays, [s.name for s in found]


def bouncing_config(frame_size, length, builtin=None, ckpt_cfg=None):
    """The ``BouncingConfig`` real sequences are drawn from: a checkpoint's ``builtin`` settings (its sizes and speeds
    scaled from its frame size to ``frame_size``, as for stage-2 frames), updated by ``builtin``."""
    fields = dict(ckpt_cfg.builtin) if ckpt_cfg else {}
    if ckpt_cfg and ckpt_cfg.frame_size != frame_size:
        k = frame_size / ckpt_cfg.frame_size
        fields.update({f: [k * v for v in fields[f]] for f in ("radius", "speed") if f in fields})
    return BouncingConfig.for_frame_size(frame_size, **{**fields, **(builtin or {}), "length": length})


def load_real(spec, n, length, frame_size, bouncing=None, seed=REAL_SEED):
    """``n`` real sequences of ``length`` frames at ``frame_size`` from ``spec``: generated for a built-in source
    (``bouncing`` its config); for ``real:NAME`` the held-out part of each clip, cut into sequences of ``length``
    frames (a part shorter than that whole); else read (every sequence, resized by stretching, cut to ``length``)."""
    spec = str(spec)
    if is_real(spec):
        parts = [s.array for s in real_sequences(spec, frame_size, split="val")]
        cut = [p[i : i + length] for p in parts for i in range(0, len(p) - length + 1, length)] or parts
        return cut[:n]
    if spec == "builtin:bouncing":
        return list(bouncing_shapes(n, replace(bouncing, length=length), seed=seed).frames)
    if spec == "builtin:digits":
        return list(moving_digits(n, length, np.atleast_1d(frame_size)[0], seed=seed))
    if spec.startswith("builtin:"):
        raise GriditError(f"unknown builtin dataset {spec!r}; choose builtin:bouncing or builtin:digits")
    out = []
    for s in find_sequences(spec)[:n]:
        frames = s.frames(range(min(len(s), length)))
        out.append(np.stack([np.asarray(resize_frame(im, frame_size, name=s.name)) for im in frames]))
    return out


def clips_of(sequences, frames, limit):
    """Non-overlapping clips of ``frames`` frames from each sequence in turn, at most ``limit``: ``(N, F, H, W, 3)``."""
    clips = [s[i : i + frames] for s in sequences for i in range(0, len(s) - frames + 1, frames)]
    return np.stack(clips[:limit]) if clips else np.zeros((0, frames, 1, 1, 3), np.uint8)


def _batches(x, size):
    return (x[i : i + size] for i in range(0, len(x), size))


def coherence_result(samples, real, reference, kind, progress, seams=None):
    """``with_baselines`` of the kind's metric, with what the reference is; ``seams`` split the samples' plausible
    rate (``read_seams``)."""
    many = digit_coherence_many if kind == "digits" else coherence_many
    out = with_baselines(samples, real, reference, score_many=many, seams=seams, progress=progress)
    return out | {"kind": kind, "reference_sequences": reference.n_sequences}


def read_seams(path):
    """The frames where a new grid or window starts adding frames, from the ``sampling.json`` that ``gridit sample``
    writes beside its frames (in ``path``, or in each output folder under it, which must agree); None if unknown."""
    path = Path(path)
    if (path / SAMPLE_RECORD).is_file():
        folders = [path]
    elif path.is_dir():
        folders = sorted(d for d in path.iterdir() if (d / SAMPLE_RECORD).is_file())
    else:
        folders = []
    seams = {json.dumps(json.loads((d / SAMPLE_RECORD).read_text()).get("seams")) for d in folders}
    return json.loads(seams.pop()) if len(seams) == 1 else None


def _features(extractor, x, batch, desc, progress):
    return extractor.features(_batches(x, batch), progress, desc, total=-(-len(x) // batch))


def frechet_result(extractor, samples, baselines, real_units, key, cache_dir, batch, progress):
    """Frechet distances of the features of ``samples`` and of each baseline (name -> uint8 units, or features
    already computed) to the real set's statistics, which ``real_units()`` supplies unless cached under ``key``."""
    kind = key["metric"]
    real, path, cached = cached_stats(cache_dir, {**key, **extractor.identity()},
                                      lambda: FeatureStats.of(_features(extractor, real_units(), batch, f"{kind} real", progress)))

    def distance(x, name):
        feats = x if x.dtype.kind == "f" else _features(extractor, x, batch, f"{kind} {name}", progress)
        return frechet_distance(real, FeatureStats.of(feats))

    out = {name: distance(x, name) for name, x in {"samples": samples, **baselines}.items()}
    return out | {"network": extractor.name, "weights": extractor.path, "stats_file": str(path), "stats_cached": cached}


def evaluate(samples_path, real_spec, *, metrics=("coherence",), i3d=None, inception=None, frames=16, clips=2048,
             real_clips=None, real_sequences=None, reference_sequences=64, builtin=None, ckpt=None, kind=None,
             stats_cache=None, batch=8, device="cpu", progress=False):  # fmt: skip
    """Every metric in ``metrics`` of the sequences at ``samples_path`` against ``real_spec``; a JSON-able dict.

    ``frames``: FVD clip length (at least 9); ``clips``: at most this many sample clips (FVD's ``fvd2048_16f``
    convention names the count actually used); ``real_clips``: real clips for the real statistics (default
    ``clips``), FID using their frames; ``real_sequences``: real sequences as long as the samples, scored as the
    baselines (default: as many as the samples, at least 8); ``reference_sequences``: fresh ones of a built-in
    source that the coherence metric holds all of them to. ``builtin`` (``BouncingConfig`` fields) and ``ckpt`` (a checkpoint whose
    training settings to take them from) say which bouncing balls are real; ``kind`` the coherence metric (default:
    digits for ``builtin:digits``, else balls).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise GriditError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if ("fvd" in metrics and not i3d) or ("fid" in metrics and not inception):
        from gridit_core.metrics.weights_setup import default_network  # what gridit weights registered

        i3d = i3d or (default_network("i3d") if "fvd" in metrics else None)
        inception = inception or (default_network("inception") if "fid" in metrics else None)
    if "fvd" in metrics and frames < 9:
        raise GriditError(f"FVD clips need at least 9 frames (I3D's temporal pooling), got --frames {frames}")
    started = time.perf_counter()
    samples, names = read_sequences(samples_path)
    h, w = samples[0].shape[1:3]
    length = max(len(s) for s in samples)
    cfg = read_config(ckpt) if ckpt else None
    kind = kind or ("digits" if str(real_spec) == "builtin:digits" else "balls")
    bouncing = bouncing_config(h, length, builtin, cfg) if str(real_spec) == "builtin:bouncing" else None
    real = load_real(real_spec, real_sequences or max(len(samples), 8), length, (h, w), bouncing)
    result = {
        "samples": str(samples_path), "real": str(real_spec), "n_sequences": len(samples),
        "n_frames": int(sum(len(s) for s in samples)), "frames_per_sequence": [len(s) for s in samples],
        "frame_size": [h, w], "sequence_names": names,
        "settings": {"metrics": list(metrics), "coherence": kind, "fvd_frames": frames, "clips": clips,
                     "real_clips": real_clips or clips, "reference_sequences": reference_sequences,
                     "real_sequences": len(real), "real_seed": REAL_SEED, "ckpt": str(ckpt) if ckpt else None,
                     "bouncing": asdict(bouncing) if bouncing else None},
        "metrics": {},
    }  # fmt: skip
    if "coherence" in metrics:
        reference = _reference(real_spec, kind, real, (h, w), length, reference_sequences, bouncing)
        seams = read_seams(samples_path)
        result["metrics"]["coherence"] = coherence_result(samples, real, reference, kind, progress, seams)
        result["settings"]["seams"] = seams
        result["settings"]["reference_in_sample"] = not str(real_spec).startswith("builtin:")
    n_real = real_clips or clips
    key = {"source": _source_id(real_spec, bouncing), "frames": frames, "size": [h, w], "clips": n_real}
    cache = stats_dir(real_spec, stats_cache)
    baselines = {"real": real, "shuffled": [shuffle_frames(r, i) for i, r in enumerate(real)],
                 "frozen": [freeze_frames(r) for r in real]}  # fmt: skip
    if "fvd" in metrics:
        from gridit_core.metrics.i3d import load_i3d

        sample_clips = clips_of(samples, frames, clips)
        if len(sample_clips) < 2:
            raise GriditError(f"FVD needs at least 2 clips of {frames} frames; the samples give {len(sample_clips)} (lower --frames)")
        moved = {k: clips_of(v, frames, len(sample_clips)) for k, v in baselines.items()}
        out = frechet_result(load_i3d(i3d, device), sample_clips, moved, _real_clips(real_spec, n_real, frames, (h, w), bouncing),
                             {"metric": "fvd", **key}, cache, batch, progress)  # fmt: skip
        name = f"fvd{len(sample_clips)}_{frames}f"
        result["metrics"]["fvd"] = out | {"name": name, "clips": len(sample_clips), "real_clips": n_real, "frames": frames}
    if "fid" in metrics:
        from gridit_core.metrics.inception import load_inception

        extractor, flat = load_inception(inception, device), np.concatenate(samples)
        real_clips_fn = _real_clips(real_spec, n_real, frames, (h, w), bouncing)
        feats = _features(extractor, np.concatenate(real), batch * frames, "fid real sequences", progress)
        lengths = [len(r) for r in real]
        firsts = feats[np.cumsum([0, *lengths[:-1]])]  # frozen: each sequence's first frame, repeated
        out = frechet_result(extractor, flat, {"real": feats, "frozen": np.repeat(firsts, lengths, axis=0)},
                             lambda: real_clips_fn().reshape(-1, h, w, 3), {"metric": "fid", **key}, cache,
                             batch * frames, progress)  # fmt: skip
        out["shuffled"] = out["real"]  # the same frames: a per-frame metric cannot see their order
        result["metrics"]["fid"] = out | {"frames": len(flat), "real_frames": n_real * frames}
    result["seconds"] = time.perf_counter() - started
    return _finite(result)


def _reference(spec, kind, real, size_hw, length, n, bouncing):
    """The real data the coherence metric holds samples to: fresh sequences of a built-in source, else ``real``."""
    if str(spec) == "builtin:bouncing":
        return BallReference.from_config(replace(bouncing, length=length), n)
    if str(spec) == "builtin:digits":
        return DigitReference.from_source(size_hw[0], length, n)
    return DigitReference.from_sequences(real) if kind == "digits" else BallReference.from_sequences(real)


def _source_id(spec, bouncing):
    """What real statistics depend on besides clip count, length and size: the built-in config, the packaged
    clips, or the folder."""
    if bouncing is not None:
        return {"spec": str(spec), "bouncing": json.loads(json.dumps(asdict(bouncing)))}
    if is_real(spec):
        return real_identity(spec)
    return {"spec": str(spec) if str(spec).startswith("builtin:") else str(Path(spec).resolve())}


def _real_clips(spec, n, frames, size_hw, bouncing):
    """A function giving ``n`` real clips ``(n, F, H, W, 3)``: one fresh sequence each for a built-in source
    (a seed the coherence baselines do not use), else cut from the data's sequences."""
    def make():
        if str(spec).startswith("builtin:"):
            return np.stack(load_real(spec, n, frames, size_hw, bouncing, seed=REAL_SEED + 1))
        got = clips_of(load_real(spec, 10**9, 10**9, size_hw), frames, n)
        if not len(got):
            raise GriditError(f"{spec} has no sequence of {frames} frames or more for FVD clips")
        return got

    return make


def _finite(x):
    """JSON-safe: infinities and NaN become None."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x.item() if isinstance(x, np.generic) else x


COHERENCE_ROWS = (  # (key in a coherence result, label) of the table, the graded figures first
    ("plausible_rate", "plausible motion"),
    ("plausible_run", "frames to first violation"),
    ("plausible_rate_at_seams", "plausible at seams"),
    ("plausible_rate_inside", "plausible inside grids"),
    ("detection_rate", "detection rate"),
    ("appearance", "appearance"),
    ("score", "indistinguishable (strict)"),
)


def table(result):
    """The terminal table: one row per figure, samples beside the real, shuffled and frozen baselines; an interval in
    brackets after the samples' value where there is one."""
    rows = []
    for metric, r in result["metrics"].items():
        if metric == "coherence":
            kind = r.get("kind", "balls")
            for key, label in COHERENCE_ROWS:
                if key in r["samples"]:
                    ci = r["samples"].get(f"{key}_ci")
                    rows.append([f"{label} ({kind})", ci] + [r[k].get(key) for k in ("samples", *BASELINES)])
            continue
        label = {"fvd": r.get("name"), "fid": f"fid ({r.get('frames')} frames)"}[metric]
        rows.append([label, None] + [r[k] for k in ("samples", *BASELINES)])
    lines = [f"{'metric':36s} {'samples':>10s} {'':17s} {'real':>10s} {'shuffled':>10s} {'frozen':>10s}"]
    for label, ci, *values in rows:
        text = [("none" if v is None else f"{v:.3f}").rjust(10) for v in values]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        lines.append(f"{label:36s} {text[0]} {interval:17s} " + " ".join(text[1:]))
    gate = result["metrics"].get("coherence", {}).get("samples", {}).get("detection_gate")
    if gate and not gate["passed"]:
        lines.append(f"the samples' objects are found in under {gate['threshold']:.0%} of the frames: motion figures "
                     "are withheld (none)")  # fmt: skip
    lines.append(f"{result['n_sequences']} sequences, {result['n_frames']} frames of {result['frame_size'][0]}x"
                 f"{result['frame_size'][1]} px, against {result['real']}")  # fmt: skip
    return "\n".join(lines)
