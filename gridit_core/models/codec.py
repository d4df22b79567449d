"""Where diffusion runs: pixel space, or the latent space of a diffusers ``AutoencoderKL`` loaded from local files.

Both codecs share one interface (``encode``, ``decode``, their batched forms, ``downsample_factor``,
``latent_channels``, ``x0_range``), so training and sampling never ask which space they are in: pixel space is the
``IdentityCodec`` (``codec=None`` in the pipelines' arguments means it). ``x0_range`` is the range a sampler may clamp
its predicted x0 to: [-1, 1] for pixels, none for latents (Stable Diffusion latents have std about 1, and clamping
them to [-1, 1] clips about a third of the values). diffusers is imported only when a VAE is loaded, and only local
folders or files are read: nothing is downloaded.

Latents follow latent diffusion (Rombach et al. 2022, Sec. 4.3): ``z = (mean(E(x)) - shift) * scale``, with the
scale that brings the latents to roughly unit variance (0.18215 for the Stable Diffusion VAE).
"""

import json
from pathlib import Path

import torch

from gridit_core.errors import GriditError
from gridit_core.grid import frames_to_grid, grid_to_frames
from gridit_core.util.io import load_file

SD_SCALE = 0.18215  # Stable Diffusion VAE latent scale, used when the config names none


class Codec:
    """Shared checks and batching; subclasses implement ``_encode`` and ``_decode`` on one batch."""

    downsample_factor = 1
    latent_channels = 3
    scale = 1.0
    device = torch.device("cpu")
    x0_range = (-1.0, 1.0)  # where a clean sample lies: a sampler clamps its predicted x0 to it (None: no clamp)

    def encode(self, x, *, sample=False, generator=None):
        """Images ``(N, 3, H, W)`` in ``[-1, 1]`` -> latents ``(N, C, H/f, W/f)``, on ``x``'s device and dtype."""
        _check(x, 3, "images")
        f = self.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise GriditError(f"image size {tuple(x.shape[-2:])} is not divisible by the codec's factor {f}")
        if len(x) == 0:  # diffusers' attention cannot reshape an empty batch
            return x.new_empty(0, self.latent_channels, x.shape[-2] // f, x.shape[-1] // f)
        with torch.no_grad():
            return self._encode(x, sample, generator).to(x.device, x.dtype)

    def decode(self, z):
        """Latents ``(N, C, h, w)`` -> images ``(N, 3, h*f, w*f)`` in ``[-1, 1]``, on ``z``'s device and dtype."""
        _check(z, self.latent_channels, "latents")
        f = self.downsample_factor
        if len(z) == 0:
            return z.new_empty(0, 3, z.shape[-2] * f, z.shape[-1] * f)
        with torch.no_grad():
            return self._decode(z).clamp(-1, 1).to(z.device, z.dtype)

    def encode_batched(self, x, batch_size=16, **kwargs):
        """``encode`` in chunks of ``batch_size``, so the codec's memory stays flat however long ``x`` is."""
        return _batched(lambda b: self.encode(b, **kwargs), x, batch_size)

    def decode_batched(self, z, batch_size=16):
        """``decode`` in chunks of ``batch_size``."""
        return _batched(self.decode, z, batch_size)


class IdentityCodec(Codec):
    """Pixel space: latents are the images themselves (factor 1, 3 channels, x0 in [-1, 1]); nothing is copied."""

    def _encode(self, x, sample, generator):
        return x

    def _decode(self, z):
        return z

    def __repr__(self):
        return "IdentityCodec()"


class LatentCodec(Codec):
    """A diffusers ``AutoencoderKL`` in eval mode with its latent scale; build it with ``from_path``."""

    x0_range = None  # latents are unbounded

    def __init__(self, vae, scale=None, shift=None):
        cfg = vae.config
        self.vae = vae.eval().requires_grad_(False)
        self.scale = float(scale if scale is not None else (getattr(cfg, "scaling_factor", None) or SD_SCALE))
        self.shift = float(shift if shift is not None else (getattr(cfg, "shift_factor", None) or 0.0))
        if self.scale <= 0:
            raise GriditError(f"latent scale must be positive, got {self.scale}")
        self.downsample_factor = 2 ** (len(cfg.block_out_channels) - 1)  # one 2x downsampler per block but the last
        self.latent_channels = int(cfg.latent_channels)
        param = next(self.vae.parameters())
        self.device, self.dtype = param.device, param.dtype

    @classmethod
    def from_path(cls, path, *, device="cpu", dtype=torch.float32, scale=None):
        """Load an ``AutoencoderKL`` from a ``save_pretrained`` folder (or a pipeline folder with ``vae/``), or from a
        ``.safetensors``/``.ckpt`` file whose folder holds the diffusers ``config.json``.

        ``scale`` overrides the config's ``scaling_factor`` (default 0.18215). Every failure is a ``GriditError``.
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise GriditError(f"VAE not found: {path}")
        if path.is_dir() and not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            path = path / "vae"  # a whole diffusers pipeline folder
        if path.is_file() and path.suffix not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
            raise GriditError(f"VAE file {path} is not a .safetensors or .ckpt file")
        config_dir = path if path.is_dir() else path.parent
        _check_config(config_dir, path)
        vae = _load_vae(path, config_dir, dtype)
        try:
            vae = vae.to(device)
        except (RuntimeError, AssertionError) as e:  # an unknown or unavailable device
            raise GriditError(f"cannot move the VAE to device {device!r}: {_first_line(e)}") from None
        return cls(vae, scale=scale)

    def _encode(self, x, sample, generator):
        dist = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean  # (N, C, h, w)
        return (z - self.shift) * self.scale

    def _decode(self, z):
        z = z.to(self.device, self.dtype) / self.scale + self.shift  # (N, C, h, w)
        return self.vae.decode(z).sample  # (N, 3, H, W)

    def __repr__(self):
        return (
            f"LatentCodec(factor={self.downsample_factor}, channels={self.latent_channels}, scale={self.scale:g}, "
            f"device={self.device}, dtype={self.dtype})"
        )


def codec_for(vae_path=None, device="cpu", dtype=torch.float32, scale=None):
    """``IdentityCodec`` when ``vae_path`` is None or empty (pixel space), else ``LatentCodec.from_path``."""
    if not vae_path:
        return IdentityCodec()
    return LatentCodec.from_path(vae_path, device=device, dtype=dtype, scale=scale)


def pixel_codec(codec):
    """``codec``, or the ``IdentityCodec`` when it is None (pixel space)."""
    return IdentityCodec() if codec is None else codec


def encode_grid(codec, grid, rows, cols, batch_size=64):
    """A grid image ``(N, 3, GH, GW)`` -> the latent grid ``(N, C, GH/f, GW/f)`` of its frames, each encoded on its own.

    Frame by frame, so a latent cell depends only on its frame: known frames carried from one grid to the next stay
    exact, and ``decode`` of one cell gives its frame back.
    """
    if isinstance(codec, IdentityCodec):
        return grid
    frames = grid_to_frames(grid, rows, cols)  # (N, F, 3, H, W)
    z = codec.encode_batched(frames.flatten(0, 1), batch_size)  # (N*F, C, h, w)
    return frames_to_grid(z.unflatten(0, frames.shape[:2]), rows, cols)


def _check(t, channels, what):
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != channels:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise GriditError(f"{what} must be a tensor (N, {channels}, H, W), got {shape}")


def _batched(fn, x, batch_size):
    if batch_size < 1:
        raise GriditError(f"batch_size must be positive, got {batch_size}")
    if len(x) == 0:
        return fn(x)  # the right empty shape
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _first_line(err):
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_config(config_dir, path):
    """Refuse anything but an ``AutoencoderKL`` config before diffusers sees it: it would load a UNet's weights
    into a VAE with a warning and random layers."""
    cfg_file = config_dir / "config.json"
    if not cfg_file.is_file():
        if path.is_dir():
            raise GriditError(f"VAE folder {path} has no config.json; save the VAE with save_pretrained")
        raise GriditError(
            f"VAE file {path} needs its diffusers config.json in the same folder (diffusers would fetch one "
            "from the Hub); or pass the folder written by AutoencoderKL.save_pretrained"
        )
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GriditError(f"cannot read VAE config {cfg_file}: {_first_line(e)}") from None
    name = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if name != "AutoencoderKL":
        raise GriditError(f"{cfg_file} describes {name or 'no diffusers class'}, not an AutoencoderKL")


def _load_vae(path, config_dir, dtype):
    """Build the VAE from local files only (``local_files_only``) and refuse weights that leave layers unset."""
    try:
        from diffusers import AutoencoderKL
        from diffusers.utils import logging as dlogging
    except ImportError:
        raise GriditError("latent space needs diffusers: pip install diffusers") from None
    verbosity = dlogging.get_verbosity()
    # failures and missing weights are reported below in one line, not logged as lists of keys beforehand
    dlogging.set_verbosity(dlogging.CRITICAL)
    try:
        if path.is_dir():
            vae, info = AutoencoderKL.from_pretrained(
                str(path), local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False, output_loading_info=True
            )
            missing = info["missing_keys"]  # mismatched shapes raise inside diffusers
        else:
            vae, missing = _from_single_file(AutoencoderKL, path, config_dir, dtype)
    except GriditError:
        raise
    except Exception as e:  # diffusers raises OSError, ValueError, RuntimeError, SafetensorError, ... by case
        raise GriditError(f"cannot load the VAE from {path}: {_first_line(e)}") from None
    finally:
        dlogging.set_verbosity(verbosity)
    if missing:
        raise GriditError(f"VAE weights in {path} do not match its config ({len(missing)} missing, e.g. {missing[0]})")
    return vae


def _from_single_file(cls, path, config_dir, dtype):
    """What ``AutoencoderKL.from_single_file(path, config=config_dir)`` does, but strict: diffusers fills the layers
    that a file lacks with random weights and says nothing. Returns the VAE and the names of missing weights."""
    state = load_file(path)  # weights_only; a corrupt file is a GriditError
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # Lightning nests the weights
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GriditError(f"VAE file {path} holds a {type(state).__name__}, not a dict of weights")
    vae = cls.from_config(cls.load_config(str(config_dir), local_files_only=True)).to(dtype)
    expected = set(vae.state_dict())
    if not expected <= set(state):  # original LDM names (Stable Diffusion's own files): map them as diffusers does
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, vae.config)
    missing = sorted(expected - set(state))
    if not missing:
        vae.load_state_dict({k: state[k] for k in expected})
    return vae, missing
