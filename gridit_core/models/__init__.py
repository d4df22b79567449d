"""Models: the building blocks (``layers``, ``positions``), the grid DiT (``dit``) and loading weights (``weights``).

One registry of architectures, ``ARCHITECTURES`` (name -> model class, built from its ``config_class``), and one
of sizes, ``DiT_models`` (``"DiT-S/4"`` -> depth, width, heads and patch): the CLI's choices read both.
"""

from dataclasses import fields

from gridit_core.errors import GriditError
from gridit_core.models.dit import DiT, DiT_models, DiTConfig, build_dit

ARCHITECTURES = {"grid": DiT}  # the grid DiT of GriDiT; each class has a ``config_class`` dataclass


def build_model(name, *, arch="grid", **kwargs):
    """A model of the registered size ``name`` (a key of ``DiT_models``) and architecture ``arch``; ``kwargs`` go to
    the architecture's config and override the named size."""
    if arch not in ARCHITECTURES:
        raise GriditError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return build_dit(name, **kwargs)


def model_from_config(arch, config):
    """Rebuild a model from its saved config dict (fields it predates take their defaults, unknown ones are refused)."""
    if arch not in ARCHITECTURES:
        raise GriditError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise GriditError(f"a {arch} model config has no fields {unknown}")
    return cls(cls.config_class(**config))


__all__ = ["ARCHITECTURES", "DiT", "DiTConfig", "DiT_models", "build_dit", "build_model", "model_from_config"]
