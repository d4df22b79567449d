"""Models: the building blocks (``layers``, ``positions``), the grid DiT (``dit``) and loading weights (``weights``).

One registry of architectures, ``ARCHITECTURES`` (name -> model class, built from its ``config_class``), and one
of sizes, ``DiT_models`` (``"DiT-S/4"`` -> depth, width, heads and patch): the CLI's choices read both.
"""

from dataclasses import fields

from gridit_core.errors import GriditError
from gridit_core.models.dit import _SIZES, DiT, DiT_models, DiTConfig, build_dit
from gridit_core.models.video import VideoDiT, VideoDiTConfig

# Each class has a ``config_class`` dataclass. grid: GriDiT's 2D DiT on grid images; tensor: a DiT over the sequence
# as one tensor (the baseline GriDiT argues against); msc: multi-scale spatio-temporal causal attention.
ARCHITECTURES = {"grid": DiT, "tensor": VideoDiT, "msc": VideoDiT}


def build_model(name, *, arch="grid", **kwargs):
    """A model of the registered size ``name`` (a key of ``DiT_models``) and architecture ``arch``; ``kwargs`` go to
    the architecture's config and override the named size."""
    if arch not in ARCHITECTURES:
        raise GriditError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if arch == "grid":
        return build_dit(name, **kwargs)
    if name not in DiT_models:
        raise GriditError(f"unknown model {name!r}; choose one of: {', '.join(DiT_models)}")
    size, patch = name[len("DiT-") :].split("/")
    return VideoDiT(VideoDiTConfig(**{"arch": arch, "patch_size": int(patch), **_SIZES[size], **kwargs}))


def model_from_config(arch, config):
    """Rebuild a model from its saved config dict (fields it predates take their defaults, unknown ones are refused)."""
    if arch not in ARCHITECTURES:
        raise GriditError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    if cls is VideoDiT and config.get("arch", arch) != arch:
        raise GriditError(f"a {config.get('arch')} model config loaded as {arch}")
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise GriditError(f"a {arch} model config has no fields {unknown}")
    return cls(cls.config_class(**config))


__all__ = ["ARCHITECTURES", "DiT", "DiTConfig", "DiT_models", "VideoDiT", "VideoDiTConfig", "build_dit", "build_model",
           "model_from_config"]  # fmt: skip
