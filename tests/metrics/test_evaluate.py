"""Tests of ``gridit_core.metrics.evaluate``: reading samples in every layout, the real data's settings, coherence with its
baselines, FVD and FID with a stand-in network (the real loaders: test_extractors.py, and end to end:
tests/cli/test_cli_eval.py), and the refusals."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.errors import GriditError
from gridit_core.metrics import evaluate as ev
from gridit_core.metrics import i3d, inception
from gridit_core.metrics.extractors import Extractor
from gridit_core.training.checkpoints import read_config
from gridit_core.training.config import TrainConfig

pytestmark = pytest.mark.unit

DEMO = {"radius": [3.0, 3.0], "speed": [1.0, 2.0], "colours": [255, 200, 60]}


def write_output(folder, frames):
    """What ``gridit sample`` writes: ``folder/frames/000000.png ...`` and ``folder/sequence.gif``."""
    (folder / "frames").mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / "frames" / f"{i:06d}.png")
    Image.fromarray(frames[0]).save(folder / "sequence.gif", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Three sample outputs of real demo balls (16 px, 20 frames) in one folder."""
    root = tmp_path_factory.mktemp("samples")
    cfg = BouncingConfig.for_frame_size(16, length=20, **DEMO)
    frames = bouncing_shapes(3, cfg, seed=11).frames
    for i, f in enumerate(frames):
        write_output(root / f"seed{i}", f)
    return root, frames


def test_read_sequences_in_every_layout(outputs, tmp_path):
    root, frames = outputs
    seqs, names = ev.read_sequences(root)
    assert names == ["seed0", "seed1", "seed2"] and all(np.array_equal(a, b) for a, b in zip(seqs, frames))
    one, names = ev.read_sequences(root / "seed1")
    assert names == ["seed1"] and np.array_equal(one[0], frames[1])
    gif, _ = ev.read_sequences(root / "seed2" / "sequence.gif")
    assert gif[0].shape == (20, 16, 16, 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(3):
        Image.fromarray(frames[0, i]).save(tmp_path / "a" / f"{i}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b" / f"{i}.png")
    with pytest.raises(GriditError, match=r"differ in frame size: \[\(8, 8\), \(16, 16\)\]"):
        ev.read_sequences(tmp_path)


def test_real_settings_from_a_checkpoint(tmp_path):
    cfg = TrainConfig(frame_size=16, builtin=DEMO)
    ckpt = tmp_path / "last.pt"
    torch.save({"config": asdict(cfg)}, ckpt)
    assert read_config(ckpt).builtin == DEMO
    bc = ev.bouncing_config(64, 24, None, read_config(ckpt))  # stage-2 frames: 4x the sizes and speeds
    assert bc.frame_size == 64 and bc.length == 24 and bc.radius == [12.0, 12.0] and bc.speed == [4.0, 8.0]
    assert ev.bouncing_config(16, 8, {"n_balls": 2}, cfg).n_balls == 2
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(GriditError, match=r"bare\.pt holds no training config: pass a checkpoint of gridit train or gridit export"):
        read_config(tmp_path / "bare.pt")


def test_coherence_of_real_samples_beside_baselines(outputs):
    root, _ = outputs
    result = ev.evaluate(root, "builtin:bouncing", builtin=DEMO, reference_sequences=16)
    c = result["metrics"]["coherence"]
    assert result["n_sequences"] == 3 and result["n_frames"] == 60 and result["frame_size"] == [16, 16]
    assert result["settings"]["bouncing"]["radius"] == [3.0, 3.0] and result["settings"]["real_sequences"] == 8
    assert c["samples"]["score"] > 0.9 and c["real"]["score"] > 0.9 and c["kind"] == "balls"
    assert c["shuffled"]["score"] < 0.05 and c["frozen"]["score"] == 0.0
    json.dumps(result, allow_nan=False)  # plain JSON
    text = ev.table(result)
    assert text.splitlines()[1].startswith("plausible motion (balls)") and "3 sequences, 60 frames of 16x16 px" in text
    assert "indistinguishable (strict) (balls)" in text and "plausible at seams" not in text  # no sampling.json here
    assert c["samples"]["plausible_rate"] == 1.0 > 0.05 > c["shuffled"]["plausible_rate"] and result["settings"]["seams"] is None


def test_digits_are_scored_with_the_digit_metric(tmp_path):
    from gridit_core.data.builtin import moving_digits

    for i, f in enumerate(moving_digits(2, 16, 16, seed=3)):
        write_output(tmp_path / f"s{i}", f)
    c = ev.evaluate(tmp_path, "builtin:digits", reference_sequences=48)["metrics"]["coherence"]  # every digit shows
    assert c["kind"] == "digits" and c["samples"]["score"] > 0.9 and c["frozen"]["score"] == 0.0
    assert "identity_kept" in c["samples"]


def stand_in(name, dim):
    """An ``Extractor`` of per-channel statistics (no network), to test the FVD/FID plumbing fast."""
    def fn(x):
        x = torch.as_tensor(x).float()
        axes = tuple(range(1, x.ndim - 1))
        return torch.cat([x.mean(axes), x.std(axes), x.amax(axes)], 1)[:, :dim]  # (N, dim)

    def load(path, device="cpu"):
        return Extractor(name, fn, dim, str(path), "state dict")

    return load


def test_fvd_and_fid_with_cached_real_stats(outputs, tmp_path, monkeypatch):
    monkeypatch.setattr(i3d, "load_i3d", stand_in("i3d", 9))
    monkeypatch.setattr(inception, "load_inception", stand_in("inception", 9))
    root, _ = outputs
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stand-in")  # named in the cache key by its size and time
    kwargs = dict(metrics=["fvd", "fid"], i3d=weights, inception=weights, frames=9, real_clips=6, real_sequences=4,
                  builtin=DEMO, stats_cache=tmp_path / "stats")  # fmt: skip
    first = ev.evaluate(root, "builtin:bouncing", **kwargs)
    fvd, fid = first["metrics"]["fvd"], first["metrics"]["fid"]
    assert fvd["name"] == "fvd6_9f" and fvd["clips"] == 6 and fvd["frames"] == 9  # two 9-frame clips per 20 frames
    assert fid["frames"] == 60 and fid["real_frames"] == 54 and fid["network"] == "inception"
    for r in (fvd, fid):
        assert not r["stats_cached"] and r["samples"] > 0 and set(ev.BASELINES) <= set(r)
        assert r["frozen"] > r["real"]  # a frozen sequence's frames are all alike
    assert fid["shuffled"] == fid["real"]  # per frame: blind to order
    assert fvd["shuffled"] != fvd["real"]
    again = ev.evaluate(root, "builtin:bouncing", **kwargs)
    assert again["metrics"]["fvd"]["stats_cached"] and again["metrics"]["fid"]["stats_cached"]
    for name, r in (("fvd", fvd), ("fid", fid)):  # the same statistics, from the file (LAPACK may vary the last bits)
        assert again["metrics"][name]["samples"] == pytest.approx(r["samples"], rel=1e-9)
    assert "fvd6_9f" in ev.table(first) and "fid (60 frames)" in ev.table(first)
    json.dumps(first, allow_nan=False)


def test_refusals(outputs, tmp_path, monkeypatch):
    root, _ = outputs
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no networks registered there
    with pytest.raises(GriditError, match=r"fvd needs i3d weights and none are registered: run `make weights` once"):
        ev.evaluate(root, "builtin:bouncing", metrics=["fvd"])
    with pytest.raises(GriditError, match=r"unknown metrics \['is'\]; choose from coherence, fvd, fid"):
        ev.evaluate(root, "builtin:bouncing", metrics=["coherence", "is"])
    with pytest.raises(GriditError, match=r"FVD clips need at least 9 frames \(I3D's temporal pooling\), got --frames 8"):
        ev.evaluate(root, "builtin:bouncing", metrics=["fvd"], i3d="x.pt", frames=8)
    with pytest.raises(GriditError, match="FVD needs at least 2 clips of 16 frames; the samples give 1 \\(lower --frames\\)"):
        ev.evaluate(root / "seed0", "builtin:bouncing", metrics=["fvd"], i3d="x.pt", builtin=DEMO)
    with pytest.raises(GriditError, match="unknown builtin dataset 'builtin:moons'; choose builtin:bouncing or builtin:digits"):
        ev.evaluate(root, "builtin:moons")
