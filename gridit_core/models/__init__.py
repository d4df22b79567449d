"""Models: the building blocks (``layers``, ``positions``), the grid DiT (``dit``), the sequence DiTs (``video``, with
MSC attention from ``msc``), the stage-2 super-resolution DiT (``sr``), the pixel and VAE-latent codecs (``codec``),
attention probabilities on demand (``attention_maps``) and loading weights (``weights``).

One registry of sizes, ``DiT_models`` (``"DiT-S/4"`` -> depth, width, heads and patch), which the CLI's choices
read. The families that use these models (grid, tensor, MSC) are registered in ``sampling.families``.
"""

from gridit_core.models.dit import DiT, DiT_models, DiTConfig, build_dit
from gridit_core.models.video import VideoDiT, VideoDiTConfig, build_video_dit

__all__ = ["DiT", "DiTConfig", "DiT_models", "VideoDiT", "VideoDiTConfig", "build_dit", "build_video_dit"]
