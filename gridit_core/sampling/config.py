"""How a model samples a sequence: ``SampleConfig``, one dataclass for every family. Each family uses some of its
fields (``sampling.families``); a checkpoint saves the settings it was validated with, and ``gridit sample`` uses
them unless told otherwise."""

from dataclasses import dataclass, fields

from gridit_core.diffusion import STEPPER_KINDS
from gridit_core.errors import GriditError

CAUSAL_SCHEDULES = ("autoregressive", "pyramid", "full")  # Diffusion Forcing's scheduling matrices (sampling.rollout)
CONDITIONINGS = ("replace", "clean")  # how a grid's or window's known cells condition the rest (diffusion.run_stepper)
CONTEXT_MODES = ("noised", "scaled")  # how MSC's context frames reach their level (sampling.rollout)


@dataclass
class SampleConfig:
    """How a model samples a sequence; a checkpoint saves the settings it was validated with."""

    sampler: str = "ddim"  # ddpm (ancestral) or ddim
    steps: int = 50  # denoising steps per grid, window or frame
    eta: float = 0.0  # DDIM eta (0: deterministic)
    resample: int = 1  # RePaint: each step done this many times with the known cells re-imposed (1: replace once)
    overlap: int | None = None  # known frames per continuation grid / window; None: all but the last row (grid), T/2
    interpolate: bool = False  # grid: keyframes, then in-betweening grids (see sampling.grids)
    conditioning: str = "replace"  # grid, tensor: known cells noised to each step and written over the sample (RePaint,
    # the official behaviour), or "clean": given at their own level (context_noise) with their own timestep
    guidance: float = 0.0  # grid, tensor: reconstruction guidance weight (Video Diffusion Models); 0: none
    schedule: str = "autoregressive"  # msc: Diffusion Forcing's scheduling: autoregressive, pyramid or full
    chunk: int = 1  # msc: frames that start together (one chunk is denoised at a time when autoregressive)
    context: int | None = None  # msc: past frames kept in the cache; None: all the model can see (its span)
    context_noise: float = 0.0  # msc, and grid/tensor with clean conditioning: the level of context frames, as a
    # fraction of the process (Diffusion Forcing's stabilisation); timestep round(context_noise * (num_steps - 1))
    context_mode: str = "noised"  # msc: context frames noised to that level by one Gaussian draw, or "scaled": only
    # multiplied by sqrt(alpha_bar) there, no draw (Diffusion Forcing's DDIM sampling)

    def __post_init__(self):
        if self.sampler not in STEPPER_KINDS:
            raise GriditError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(STEPPER_KINDS)}")
        for name, low in (("steps", 1), ("resample", 1), ("chunk", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise GriditError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.eta <= 1:
            raise GriditError(f"eta must lie in [0, 1], got {self.eta}")
        for name in ("overlap", "context"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise GriditError(f"{name} must be None or an integer >= 0, got {value!r}")
        if self.schedule not in CAUSAL_SCHEDULES:
            raise GriditError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(CAUSAL_SCHEDULES)}")
        if not 0 <= self.context_noise < 1:
            raise GriditError(f"context_noise must lie in [0, 1), got {self.context_noise}")
        if self.context_mode not in CONTEXT_MODES:
            raise GriditError(f"unknown context mode {self.context_mode!r}; choose one of {', '.join(CONTEXT_MODES)}")
        if self.conditioning not in CONDITIONINGS:
            raise GriditError(f"unknown conditioning {self.conditioning!r}; choose one of {', '.join(CONDITIONINGS)}")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)) or not self.guidance >= 0:
            raise GriditError(f"guidance must be a number >= 0, got {self.guidance!r}")

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d, what="sample config"):
        """A ``SampleConfig`` from a dict; unknown keys are refused by name."""
        if not isinstance(d, dict):
            raise GriditError(f"{what} must be a dict of {', '.join(cls.names())}, got {d!r}")
        unknown = sorted(set(d) - set(cls.names()))
        if unknown:
            raise GriditError(f"{what}: unknown settings {unknown}; known: {', '.join(cls.names())}")
        return cls(**d)

    @classmethod
    def over(cls, saved, given, what="sampling"):
        """The settings ``given`` (None: not given) over ``saved`` (a checkpoint's), the rest the defaults: how
        ``gridit sample``, the notebooks and the widgets choose a model's settings."""
        return cls.from_dict({**(saved or {}), **{k: v for k, v in given.items() if v is not None}}, what)

    def context_t(self, num_steps):
        """The timestep context frames are given at: ``context_noise`` of a process of ``num_steps``."""
        return round(self.context_noise * (num_steps - 1))

    def pick(self, names):
        """The fields ``names`` as a dict (a family's ``sample_fields``)."""
        return {name: getattr(self, name) for name in names}
