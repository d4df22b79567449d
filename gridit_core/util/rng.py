"""Random draws that reproduce across devices: drawn on the generator's own device, then moved.

A CPU generator seeded once therefore gives the same numbers whether the tensors end up on a CPU or a GPU.
"""

import torch


def _source(generator, device):
    return generator.device if generator is not None else device


def randn(shape, generator=None, device=None, dtype=torch.float32):
    """Standard normal noise of ``shape`` drawn on the generator's device, then moved to ``device``."""
    return torch.randn(shape, generator=generator, device=_source(generator, device), dtype=dtype).to(device)


def uniform(n, bounds, generator=None, device=None):
    """``(n,)`` float32 uniform in ``[lo, hi)``, drawn on the generator's device."""
    u = torch.rand(n, generator=generator, device=_source(generator, device)).to(device)
    return bounds[0] + (bounds[1] - bounds[0]) * u


def randint(high, shape, generator=None, device=None):
    """Integers uniform in ``[0, high)`` of ``shape``, drawn on the generator's device."""
    return torch.randint(0, high, shape, generator=generator, device=_source(generator, device)).to(device)
