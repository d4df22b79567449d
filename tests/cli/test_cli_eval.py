"""``gridit eval``: on the outputs of every ``gridit sample`` (grid, two-stage, MSC), with FVD and FID from tiny
weight files of each accepted format, and its one-line refusals."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from gridit_core.cli import main
from gridit_core.data.builtin import BouncingConfig, bouncing_shapes
from gridit_core.metrics.i3d import InceptionI3d

pytestmark = pytest.mark.unit

SMALL = '{"depth": 1, "hidden_size": 32, "num_heads": 2}'
DEMO = '{"radius": [3, 3], "speed": [1, 2], "colours": [255, 200, 60]}'


def run(*argv):
    return main([str(a) for a in argv])


def one_error(capsys, *argv):
    code = run(*argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gridit eval: error: "), err
    return err.strip()


@pytest.fixture(scope="module")
def gif(tmp_path_factory):
    """Two real demo sequences (16 px, 12 frames) as GIFs in one folder."""
    folder = tmp_path_factory.mktemp("gifs")
    cfg = BouncingConfig.for_frame_size(16, length=12, radius=(3, 3), speed=(1, 2), colours=(255, 200, 60))
    for i, f in enumerate(bouncing_shapes(2, cfg, seed=2).frames):
        Image.fromarray(f[0]).save(folder / f"s{i}.gif", save_all=True, append_images=[Image.fromarray(x) for x in f[1:]])
    return folder


def test_eval_writes_the_json_and_prints_the_table(gif, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert run("eval", gif, "--real", "builtin:bouncing", "--builtin", DEMO, "--real-sequences", 2, "--out", out) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["n_sequences"] == 2 and result["frames_per_sequence"] == [12, 12]
    scores = result["metrics"]["coherence"]
    assert scores["samples"]["score"] > 0.9 and scores["frozen"]["score"] == 0.0
    strict = [line for line in printed.splitlines() if line.startswith("indistinguishable (strict)")]
    assert f"{scores['samples']['score']:10.3f}" in strict[0] and f"wrote {out}" in printed
    assert printed.splitlines()[1].startswith("plausible motion (balls)") and scores["samples"]["plausible_rate"] == 1.0


def test_eval_refusals(gif, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert f"{out} exists; pass --overwrite to replace it" in one_error(capsys, "eval", gif, "--real", "builtin:bouncing", "--out", out)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no networks registered there
    err = one_error(capsys, "eval", gif, "--real", "builtin:bouncing", "--metric", "fvd", "--out", tmp_path / "x.json")
    assert "fvd needs i3d weights and none are registered: run `make weights` once" in err and "or pass --i3d PATH" in err
    err = one_error(capsys, "eval", gif, "--real", "builtin:bouncing", "--metric", "fid", "--inception", tmp_path / "no.pth",
                    "--out", tmp_path / "x.json")  # fmt: skip
    assert f"Inception weights file not found: {tmp_path / 'no.pth'}" in err
    assert "dataset path" in one_error(capsys, "eval", tmp_path / "none", "--real", "builtin:bouncing", "--out", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


class TorchScriptInception(nn.Module):
    """What a TorchScript Inception file holds, in miniature: ``(uint8 images, return_features=True)`` -> 2048-d."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 2048, 1)

    def forward(self, x, return_features: bool = False):
        return self.head(x.float() / 255).mean(dim=(2, 3))


def train(out, *extra):
    return run("train", "--data", "builtin:bouncing", "--model", "DiT-N/4", "--frame-size", 16, "--steps", 1, "--batch-size", 2,
               "--n-sequences", 4, "--warmup", 1, "--device", "cpu", "--model-kwargs", SMALL, "--out", out, *extra)  # fmt: skip


@pytest.mark.slow
def test_eval_on_every_kind_of_sample_output_with_fvd_and_fid(tmp_path, capsys):
    """Grid, two-stage and MSC samples; FVD from a state dict, FID from a TorchScript file (both tiny)."""
    assert train(tmp_path / "grid", "--builtin", DEMO) == 0
    assert train(tmp_path / "sr", "--stage", 2, "--scale", 2, "--frame-size", 32) == 0
    assert train(tmp_path / "msc", "--arch", "msc", "--frames", 4, "--model-kwargs", '{"depth": 1, "hidden_size": 32, "num_heads": 4}') == 0
    grid, sr, msc = (tmp_path / name / "checkpoints" / "last.pt" for name in ("grid", "sr", "msc"))
    torch.manual_seed(0)
    torch.save(InceptionI3d(width=1 / 32).state_dict(), tmp_path / "i3d.pt")
    torch.jit.save(torch.jit.script(TorchScriptInception()), str(tmp_path / "inception.pt"))
    for name, ckpt, extra in [("grid", grid, []), ("two", grid, ["--sr-ckpt", sr, "--sr-steps", 1]), ("msc", msc, [])]:
        for seed in (0, 1):
            assert run("sample", "--ckpt", ckpt, "--frames", 10, "--steps", 1, "--out", tmp_path / name / f"s{seed}",
                       "--seed", seed, "--device", "cpu", *extra) == 0  # fmt: skip
    for name, size in [("grid", 16), ("two", 32), ("msc", 16)]:
        out = tmp_path / f"{name}.json"
        assert run("eval", tmp_path / name, "--real", "builtin:bouncing", "--ckpt", grid, "--metric", "coherence,fvd,fid",
                   "--i3d", tmp_path / "i3d.pt", "--inception", tmp_path / "inception.pt", "--frames", 9, "--real-clips", 3,
                   "--real-sequences", 2, "--stats-cache", tmp_path / "stats", "--out", out) == 0  # fmt: skip
        result = json.loads(out.read_text())
        assert result["frame_size"] == [size, size] and result["n_sequences"] == 2 and result["n_frames"] == 20
        m = result["metrics"]
        assert m["fvd"]["name"] == "fvd2_9f" and m["fvd"]["network"] == "i3d" and m["fid"]["network"] == "inception-torchscript"
        assert np.isfinite([m["fvd"]["samples"], m["fid"]["samples"], m["coherence"]["real"]["score"]]).all()
        assert result["settings"]["bouncing"]["radius"] == [3 * size / 16] * 2  # the checkpoint's balls at this size
