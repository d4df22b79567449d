"""GriDiT Workbench core: grid tiling, DiT models, diffusion samplers, training and sequence sampling."""

from gridit_core.errors import GriditError

__all__ = ["GriditError"]
__version__ = "0.1.0"
