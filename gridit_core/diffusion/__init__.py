"""Diffusion: the Gaussian process, its losses and respacing (``process``), and the samplers that run it
(``samplers``: the one-step ``Stepper``, DDPM/DDIM, classifier-free guidance, RePaint known-region conditioning)."""

from gridit_core.diffusion.process import (
    Diffusion,
    DiffusionConfig,
    learned_log_variance,
    make_betas,
    process_tables,
    x0_and_eps,
)  # fmt: skip
from gridit_core.diffusion.samplers import (
    SAMPLERS,
    STEPPER_KINDS,
    Stepper,
    ddim_sample,
    ddpm_sample,
    model_output,
    run_stepper,
    sample,
    x0_clip_range,
)  # fmt: skip

__all__ = ["SAMPLERS", "STEPPER_KINDS", "Diffusion", "DiffusionConfig", "Stepper", "ddim_sample", "ddpm_sample", "learned_log_variance",
           "make_betas", "model_output", "process_tables", "run_stepper", "sample", "x0_and_eps", "x0_clip_range"]  # fmt: skip
