"""Sampling: long sequences from a trained model of any family, then stage 2.

``config`` (``SampleConfig``: how a model samples), ``grids`` (GriDiT: grid by grid), ``rollout`` (the tensor model's
sliding windows, MSC's causal rollout with a KV cache), ``families`` (the family registry and ``generate_frames``,
the one entry point for every family), ``upscale`` (stage 2: super-resolve frames) and ``two_stage`` (both stages,
streamed to disk).
"""

from gridit_core.sampling.config import CAUSAL_SCHEDULES, SampleConfig
from gridit_core.sampling.families import (
    FAMILIES,
    SAMPLE_OUTPUTS,
    Family,
    family_of,
    generate_frames,
    get_family,
    sample_sequence,
)  # fmt: skip

__all__ = ["CAUSAL_SCHEDULES", "FAMILIES", "SAMPLE_OUTPUTS", "Family", "SampleConfig", "family_of", "generate_frames",
           "get_family", "sample_sequence"]  # fmt: skip
