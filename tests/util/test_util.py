"""The shared helpers: atomic writes, reproducible random draws, image conversions and resizes, device choice."""

import os
import stat

import numpy as np
import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.util.device import autocast, resolve_device, resolve_precision
from gridit_core.util.image import downscale, tensor_to_uint8, uint8_to_tensor, upsample
from gridit_core.util.io import atomic_path, load_file, save_atomic, write_text_atomic
from gridit_core.util.rng import randint, randn, uniform

pytestmark = pytest.mark.unit


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a" / "report.txt"
    write_text_atomic("first", path)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the sec")
            raise RuntimeError("disk full")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.txt"]  # no temporary file left behind
    write_text_atomic("second", path)
    assert path.read_text() == "second"


def test_atomic_files_get_ordinary_permissions(tmp_path):
    path = tmp_path / "x.pt"
    save_atomic({"w": torch.ones(2)}, path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    os.chmod(path, 0o640)
    save_atomic({"w": torch.zeros(2)}, path)  # a replaced file keeps its mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert torch.equal(load_file(path)["w"], torch.zeros(2))


def test_load_file_refuses_missing_and_corrupt_files(tmp_path):
    with pytest.raises(GriditError, match="checkpoint not found"):
        load_file(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GriditError, match="cannot read checkpoint"):
        load_file(tmp_path / "bad.pt")


def test_draws_come_from_the_generator_and_reproduce():
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        draws.append((randn((3, 2), g), uniform(4, (2.0, 3.0), g), randint(5, (6,), g)))
    for a, b in zip(*draws):
        assert torch.equal(a, b)
    x, u, k = draws[0]
    assert x.shape == (3, 2) and bool(((u >= 2) & (u < 3)).all()) and bool(((k >= 0) & (k < 5)).all())
    assert randn((2,), torch.Generator().manual_seed(7), dtype=torch.float64).dtype == torch.float64


def test_uint8_round_trip_and_resizes():
    arr = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = uint8_to_tensor(arr)
    assert x.shape == (2, 3, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.array_equal(tensor_to_uint8(x), arr)
    small = downscale(x, 4)
    big = upsample(small, 4)
    assert small.shape == (2, 3, 2, 2) and big.shape == (2, 3, 8, 8)
    assert float(big.abs().max()) <= 1  # bicubic overshoot is clamped
    assert upsample(small.double(), 2).dtype == torch.float64
    with pytest.raises(GriditError, match="frame size 8x8 is not divisible by the scale factor 3"):
        downscale(x, 3)
    with pytest.raises(GriditError, match="expected uint8 images"):
        uint8_to_tensor(arr.astype(np.float32))


def test_device_and_precision_choice():
    cpu = resolve_device("cpu")
    assert cpu == torch.device("cpu")
    assert resolve_precision(cpu, "auto") == "fp32" and resolve_precision(cpu, "bf16") == "bf16"
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
