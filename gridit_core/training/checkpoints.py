"""A run's files: rebuilding its model and diffusion from the config, its codec, exporting its weights, reading a
checkpoint's saved config, and loading a trained model for sampling. Nothing here trains: whatever samples a trained
model (the CLI, the notebooks, the widgets) loads it from here without importing the trainer.
"""

import json
from dataclasses import asdict
from pathlib import Path

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.models.codec import IdentityCodec, LatentCodec
from gridit_core.models.sr import build_sr_model
from gridit_core.sampling import SampleConfig, get_family
from gridit_core.sampling.families import DEFAULT_FAMILY
from gridit_core.training.config import _WRONG_STAGE, CHECKPOINT_KINDS, TrainConfig
from gridit_core.util.io import atomic_path, load_file


def build_model_and_diffusion(cfg: TrainConfig, codec=None):
    """The DiT and the diffusion process a config describes; ``codec`` (from ``load_codec``, needed when ``cfg.vae``
    is set) sizes the model for its latents: ``latent_channels`` channels, frames ``downsample_factor`` times smaller."""
    codec = codec if codec is not None else IdentityCodec()
    if cfg.vae and isinstance(codec, IdentityCodec):
        raise GriditError("a latent-space config needs its codec (training.load_codec) to size the model")
    channels, factor = codec.latent_channels, codec.downsample_factor
    diffusion = Diffusion(DiffusionConfig(**cfg.diffusion))
    if cfg.frame_size % factor:
        raise GriditError(f"frame size {cfg.frame_size} is not divisible by the VAE's downsampling factor {factor}")
    side = cfg.frame_size // factor
    try:
        if cfg.stage == 2:
            model = build_sr_model(
                cfg.model, cfg.frame_size, cfg.scale, channels=channels, factor=factor,
                learn_sigma=diffusion.config.learn_sigma, pos_embed=cfg.pos_embed, **cfg.model_kwargs,
            )  # fmt: skip
        else:
            family = get_family(cfg.arch)
            model = family.build(cfg.model, **family.geometry(cfg, side), in_channels=channels,
                                 learn_sigma=diffusion.config.learn_sigma, **cfg.model_kwargs)  # fmt: skip
    except GriditError as e:
        if factor == 1:
            raise
        raise GriditError(f"{e} (the VAE's latents of {cfg.frame_size}px frames are {side}px)") from None
    return model, diffusion


def load_codec(cfg: TrainConfig, model=None, *, vae=None, device="cpu"):
    """The codec a run diffuses in: the ``IdentityCodec`` for pixel space, else a ``latent.LatentCodec`` of ``vae`` (a path that
    overrides the one saved in ``cfg``, e.g. on another machine) or of ``cfg.vae``.

    With ``model``, the VAE's latent channels and downsampling factor are checked against it and ``cfg.frame_size``.
    """
    if not cfg.vae:
        if vae is not None:
            raise GriditError(f"--vae {vae}: this stage-{cfg.stage} model was trained in pixel space, not in a VAE's latents")
        return IdentityCodec()
    path = Path(vae if vae is not None else cfg.vae).expanduser()
    if vae is None and model is not None and not path.exists():  # a trained model whose VAE has moved
        raise GriditError(f"this stage-{cfg.stage} model was trained in the latents of the VAE {path}, which is not "
                          "there; pass --vae PATH")  # fmt: skip
    codec = LatentCodec.from_path(path, device=device, scale=cfg.vae_scale)
    if model is not None:
        mc = model.config
        channels = mc.in_channels // 2 if cfg.stage == 2 else mc.in_channels
        side = (mc.image_size if cfg.stage == 2 else mc.frame_hw)[0]
        if (codec.latent_channels, side * codec.downsample_factor) != (channels, cfg.frame_size):
            raise GriditError(
                f"the VAE {path} has {codec.latent_channels} latent channels at 1/{codec.downsample_factor} size, but "
                f"the model was trained on {channels} channels of {side}px for {cfg.frame_size}px frames"
            )
    return codec


def read_metrics(path):
    """The metrics log (``metrics.jsonl``) as a list of dicts; empty when there is none yet."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_config(path):
    """The ``TrainConfig`` saved in one of our checkpoints (training ``.pt`` or exported ``.safetensors``) without
    building its model; an export's weights are not even read."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        meta = _metadata(path)
        saved = json.loads(meta["config"]) if meta.get("config") else None
    else:
        state = load_file(path)
        saved = state.get("config") if isinstance(state, dict) else None
    if not saved:
        raise GriditError(f"{path} holds no training config: pass a checkpoint of gridit train or gridit export")
    return TrainConfig.from_dict(saved)


def _metadata(path):
    """The metadata dict of a ``.safetensors`` file."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def export_weights(ckpt_path, out_path, *, use_ema=True, sampling=None):
    """Write a run's (EMA) weights as ``.safetensors``, with the configs in its metadata so it samples on its own.

    ``ckpt_path`` is a training checkpoint or an export (to re-export it). ``sampling`` (``SampleConfig`` fields)
    replaces the sampling settings saved with the run: the defaults ``gridit sample`` uses for this model.
    """
    from safetensors.torch import save_file

    state = _trained_state(ckpt_path)
    config = dict(state["config"])
    if sampling is not None:
        config["sampling"] = asdict(SampleConfig.from_dict(sampling, what="sampling"))
    weights = {k: v.contiguous() for k, v in state["ema" if use_ema else "model"].items()}
    meta = {"kind": state["kind"], "arch": state.get("arch", DEFAULT_FAMILY), "step": str(state["step"])}
    meta.update({k: json.dumps(v) for k, v in
                 (("config", config), ("model_config", state["model_config"]), ("diffusion_config", state["diffusion_config"]))})
    with atomic_path(out_path) as tmp:
        save_file(weights, tmp, metadata=meta)
    return Path(out_path)


def _trained_state(path, stage=None):
    """One of our checkpoints as a dict with ``kind``, ``config``, ``model_config``, ``diffusion_config`` and weights.

    ``stage`` (1 or 2) refuses the other stage's checkpoints; None takes either.
    """
    path = Path(path)
    what = f"stage-{stage}" if stage else "stage-1 or stage-2"
    kinds = [CHECKPOINT_KINDS[stage]] if stage else list(CHECKPOINT_KINDS.values())
    if path.suffix == ".safetensors":
        weights = load_file(path)
        meta = _metadata(path)
        kind = meta.get("kind")
        _check_kind(path, kind, stage)
        if kind not in kinds:
            raise GriditError(f"{path} has no GriDiT {what} metadata; load it into a model with models.weights.load_weights instead")
        state = {k: json.loads(meta[k]) for k in ("config", "model_config", "diffusion_config")}
        return {**state, "ema": weights, "model": weights, "step": int(meta.get("step", 0)), "kind": kind,
                "arch": meta.get("arch", DEFAULT_FAMILY)}
    state = load_file(path, map_location="cpu")
    kind = state.get("kind") if isinstance(state, dict) else None
    _check_kind(path, kind, stage)
    if kind not in kinds:
        raise GriditError(f"{path} is not a GriDiT {what} checkpoint (no kind {' or '.join(map(repr, kinds))})")
    return state


def _check_kind(path, kind, stage):
    """A clear refusal when ``path`` holds the other stage's checkpoint."""
    found = {k: s for s, k in CHECKPOINT_KINDS.items()}.get(kind)
    if stage and found and found != stage:
        raise GriditError(f"{path} {_WRONG_STAGE[found]}")


def _rebuild(path, state, use_ema, device):
    """``(model, diffusion, config)`` from a checkpoint state, the model in eval mode."""
    what = {k: f"stage-{s}" for s, k in CHECKPOINT_KINDS.items()}[state["kind"]]
    try:
        cfg = TrainConfig.from_dict(state["config"])
        diffusion = Diffusion(DiffusionConfig(**state["diffusion_config"]))
        model = get_family(state.get("arch", DEFAULT_FAMILY)).from_config(state["model_config"])
        model.load_state_dict(state["ema" if use_ema else "model"])
    except (KeyError, TypeError, RuntimeError, GriditError) as e:
        raise GriditError(f"{path} is an incomplete or inconsistent {what} checkpoint: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), diffusion, cfg


def load_trained(path, *, use_ema=True, device="cpu"):
    """Rebuild a stage-1 model (EMA weights by default) and its diffusion from one of our checkpoints.

    ``path`` is a training checkpoint (``checkpoints/last.pt``) or an exported ``.safetensors``.
    Returns ``(model, diffusion, config)`` with the model in eval mode.
    """
    return _rebuild(path, _trained_state(path, stage=1), use_ema, device)


def load_sr(path, *, use_ema=True, device="cpu"):
    """Rebuild a stage-2 (super-resolution) model, its diffusion and config (``cfg.scale``) from one of our checkpoints.

    ``path`` as for ``load_trained``; the model goes to ``sampling.upscale.upscale_frames``.
    """
    return _rebuild(path, _trained_state(path, stage=2), use_ema, device)
