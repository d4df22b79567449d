"""The device a run uses and the autocast context for its precision: one choice, shared by training and benchmarks."""

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name="auto"):
    """``"auto"``: CUDA when available, else the CPU; any other name as ``torch.device`` reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(device, precision="auto"):
    """``"auto"`` -> ``"bf16"`` on a CUDA device that supports it, else ``"fp32"``; other values as they are."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast(device, precision="auto"):
    """A fresh autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
