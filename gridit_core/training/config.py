"""What a training run depends on (``TrainConfig``), saved in every checkpoint, and the kinds of checkpoint."""

from dataclasses import asdict, dataclass, field, fields

from gridit_core.data.degrade import DegradeConfig
from gridit_core.errors import GriditError
from gridit_core.models.sr import MAX_AUG, check_scale
from gridit_core.sampling import FAMILIES, SampleConfig, get_family
from gridit_core.util.device import PRECISIONS

LR_DECAYS = ("constant", "cosine")  # the learning rate after warm-up (``trainer.lr_factor``)

CHECKPOINT_KIND = "gridit-stage1"
CHECKPOINT_KINDS = {1: CHECKPOINT_KIND, 2: "gridit-stage2"}
_WRONG_STAGE = {  # why a checkpoint of the other stage is refused, and where it belongs
    1: "is a stage-1 (grid) checkpoint; use it with gridit sample --ckpt",
    2: "is a stage-2 (super-resolution) checkpoint; use it with --sr-ckpt or gridit upscale",
}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    data: str = "builtin:bouncing"  # a dataset folder, a GIF/video, or builtin:bouncing / builtin:digits
    model: str = "DiT-T/4"  # a name from gridit_core.models.DiT_models
    arch: str = "grid"  # the model family: grid (GriDiT), tensor (a DiT over the sequence tensor) or msc; sampling.FAMILIES
    frames: int = 8  # tensor, msc: clip length T the model trains on
    noise: str = ""  # shared, per-frame (Diffusion Forcing) or context levels (training.losses); "": the family's default
    rows: int = 2  # grid rows
    cols: int = 2  # grid columns
    frame_size: int = 16  # each cell is frame_size x frame_size pixels
    stride: int = 1  # temporal subsampling of the source frames
    resize: str = "stretch"  # stretch (official) | center-crop | none
    pos_embed: str = "grid2d"  # grid2d (official) | frame3d
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # grids per optimizer step per process (split into grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.0
    warmup: int = 100  # optimizer steps of linear warm-up
    lr_decay: str = "constant"  # after warm-up: constant (official) | cosine (a half cosine down to 0 at ``steps``)
    ema_decay: float = 0.999  # per optimizer step
    ema_warmup: bool = True  # decay min(ema_decay, (1+step)/(10+step)): early EMA weights forget the random init
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    precision: str = "auto"  # auto (bf16 on CUDA when supported, else fp32) | fp32 | bf16
    diffusion: dict = field(default_factory=dict)  # DiffusionConfig fields
    model_kwargs: dict = field(default_factory=dict)  # extra DiTConfig fields
    n_sequences: int = 2000  # sequences generated for a builtin dataset
    builtin: dict = field(default_factory=dict)  # BouncingConfig fields for builtin:bouncing
    init: str = ""  # checkpoint to start from (official DiT or ours); empty = random init
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 250
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    stage: int = 1  # 1: grids of frames; 2: per-frame super-resolution (rows = cols = 1, frame_size is the HR side)
    scale: int = 4  # stage 2: high / low resolution, 2 or 4
    max_aug: float = MAX_AUG  # stage 2: noise-augmentation levels of the conditioning image ~ U(0, max_aug)
    degrade: dict = field(default_factory=dict)  # stage 2: DegradeConfig fields (scale comes from ``scale``)
    residual: bool = True  # stage 2: diffuse hr minus the bicubic upsample of its low-resolution frame
    vae: str = ""  # a local diffusers AutoencoderKL (folder or file): diffuse in its latent space; "" = pixel space
    vae_scale: float | None = None  # latent scale; None = the VAE config's scaling_factor (0.18215 if it names none)
    sampling: dict = field(default_factory=dict)  # SampleConfig fields this model samples best with (gridit sample's defaults)

    def __post_init__(self):
        if self.stage not in CHECKPOINT_KINDS:
            raise GriditError(f"stage must be 1 or 2, got {self.stage!r}")
        if self.stage == 2:
            check_scale(self.scale)
            if self.frame_size % self.scale:
                raise GriditError(f"frame size {self.frame_size} is not divisible by the scale factor {self.scale}")
            if not 0 <= self.max_aug <= 1:
                raise GriditError(f"max_aug must lie in [0, 1], got {self.max_aug}")
            if self.degrade.get("scale", self.scale) != self.scale:
                raise GriditError(f"degrade scale {self.degrade['scale']} differs from the training scale {self.scale}")
            try:
                DegradeConfig(**{**self.degrade, "scale": self.scale})  # its own checks, now rather than mid-run
            except TypeError as e:
                known = ", ".join(f.name for f in fields(DegradeConfig) if f.name != "scale")
                raise GriditError(f"degrade: {e}; known fields: {known}") from None
            self.rows = self.cols = 1  # frames are independent samples in stage 2
        family = get_family(self.arch)
        if self.stage == 2 and not family.stage2:
            raise GriditError(f"stage 2 is a per-frame grid DiT: --arch {self.arch} is for stage 1")
        if self.noise and self.noise not in family.noise_modes:
            users = " and ".join(f.name for f in FAMILIES.values() if self.noise in f.noise_modes) or "no"
            raise GriditError(f"a {self.arch} model trains with noise {' or '.join(family.noise_modes)}: --noise "
                              f"{self.noise} is for {users} models")  # fmt: skip
        self.noise = self.noise or family.noise_modes[0]
        if not family.on_grids and self.frames < 1:
            raise GriditError(f"the clip length (--frames) must be at least 1, got {self.frames}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise GriditError("steps, batch size and grad_accum must be positive")
        if self.batch_size % self.grad_accum:
            raise GriditError(f"batch size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.lr_decay not in LR_DECAYS:
            raise GriditError(f"unknown learning-rate decay {self.lr_decay!r}: use {' or '.join(LR_DECAYS)}")
        if self.precision not in PRECISIONS:
            raise GriditError(f"unknown precision {self.precision!r}: use auto, fp32 or bf16")
        self.sampling = asdict(SampleConfig.from_dict(self.sampling, what="sampling")) if self.sampling else {}

    @classmethod
    def from_dict(cls, d):
        """A saved config; fields it predates take their defaults, except ``residual``: stage-2 runs saved before it
        existed diffused the frame itself."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("stage") == 2:
            d.setdefault("residual", False)
        return cls(**d)
