"""Tests for gridit_core.models.codec: a tiny random AutoencoderKL saved to a temporary folder, loaded offline."""

import importlib
import json
import re
import shutil
import socket
import sys

import pytest
import torch

import gridit_core.models
import gridit_core.models.codec as vae_module
from gridit_core.errors import GriditError
from gridit_core.models.codec import IdentityCodec, LatentCodec, codec_for

pytestmark = pytest.mark.unit

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def vae(make_tiny_vae):
    return make_tiny_vae().double()  # float64, like the codec it is compared with


@pytest.fixture(scope="module")
def folder(tiny_vae_folder):
    return tiny_vae_folder


@pytest.fixture
def offline(monkeypatch):
    """No Hub and no sockets: any attempt to reach out raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("127.0.0.1", 9))


def images(n=3, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_importing_latent_module_does_not_import_diffusers(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # any import of diffusers or its submodules now fails
    monkeypatch.delitem(sys.modules, "gridit_core.models.codec")  # restored afterwards, so other tests keep their classes
    monkeypatch.setattr(gridit_core.models, "codec", vae_module)
    fresh = importlib.import_module("gridit_core.models.codec")
    assert fresh is not vae_module and isinstance(fresh.codec_for(None), fresh.IdentityCodec)


def test_identity_codec_is_pixel_space():
    codec = codec_for(None)
    assert isinstance(codec, IdentityCodec)
    assert (codec.downsample_factor, codec.latent_channels, codec.scale) == (1, 3, 1.0)
    x = images()
    z = codec.encode(x)
    assert z is x  # pixel space: nothing is copied
    assert codec.x0_range == (-1.0, 1.0)
    assert torch.equal(codec.decode_batched(1.5 * z, batch_size=2), (1.5 * x).clamp(-1, 1))


def test_load_offline_gives_latents_of_the_right_shape(folder, offline):
    codec = LatentCodec.from_path(folder)
    assert (codec.downsample_factor, codec.latent_channels) == (2, 4)
    assert codec.scale == 0.18215 and codec.device == torch.device("cpu")
    z = codec.encode(images(2, 16))
    assert z.shape == (2, 4, 8, 8) and z.dtype == torch.float32
    x = codec.decode(z)
    assert x.shape == (2, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert codec_for(folder).latent_channels == 4


def test_encode_decode_is_the_vae_with_the_scale(vae, folder):
    # float64: the codec decodes z / scale, which differs from mean by rounding, and how much the decoder amplifies
    # that in float32 (1.8e-6 here) depends on the CPU's kernels; in float64 the two agree to ~1e-14, while a scale
    # left out or applied twice moves the images by > 0.1
    codec = LatentCodec.from_path(folder, dtype=torch.float64)
    x = images().double()
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        expected = vae.decode(mean).sample.clamp(-1, 1)
    z = codec.encode(x)
    assert torch.allclose(z, mean * 0.18215, atol=1e-12, rtol=0)
    assert torch.allclose(codec.decode(z), expected, atol=1e-12, rtol=0)
    unit = LatentCodec.from_path(folder, scale=1.0, dtype=torch.float64)
    assert unit.scale == 1.0 and torch.allclose(unit.encode(x), mean, atol=1e-12, rtol=0)
    assert torch.allclose(unit.decode(mean), expected, atol=1e-12, rtol=0)


def test_scale_defaults_to_the_config_scaling_factor(make_tiny_vae, tmp_path):
    make_tiny_vae(scaling_factor=0.5).save_pretrained(tmp_path)
    assert LatentCodec.from_path(tmp_path).scale == 0.5
    assert LatentCodec.from_path(tmp_path, scale=2.0).scale == 2.0
    with pytest.raises(GriditError, match="positive"):
        LatentCodec.from_path(tmp_path, scale=-1.0)


def test_sampling_draws_from_the_posterior_reproducibly(folder):
    codec = LatentCodec.from_path(folder)
    x = images(2)
    a = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    b = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, codec.encode(x))


def test_batched_equals_unbatched(folder):
    # float64: convolutions of another batch size may sum in another order, and in float32 the decoded images then
    # differ by up to 1.4e-6, more or less with the CPU's kernels; in float64 by < 1e-15. A chunk lost, repeated or
    # misplaced changes values by > 0.1.
    codec = LatentCodec.from_path(folder, dtype=torch.float64)
    x = images(5).double()
    z = codec.encode(x)
    assert torch.allclose(codec.encode_batched(x, batch_size=2), z, atol=1e-12, rtol=0)
    assert torch.allclose(codec.decode_batched(z, batch_size=2), codec.decode(z), atol=1e-12, rtol=0)
    assert codec.encode_batched(x[:0]).shape == (0, 4, 8, 8)


def test_single_file_loads_offline_with_its_config_beside_it(folder, tmp_path, offline):
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    shutil.copy(folder / WEIGHTS, tmp_path / "vae.safetensors")
    x = images(2)
    single = LatentCodec.from_path(tmp_path / "vae.safetensors")
    assert torch.equal(single.encode(x), LatentCodec.from_path(folder).encode(x))


def test_single_file_without_config_or_with_missing_weights_is_refused(folder, tmp_path, offline):
    from safetensors.torch import load_file, save_file

    lonely = tmp_path / "alone" / "vae.safetensors"
    lonely.parent.mkdir()
    shutil.copy(folder / WEIGHTS, lonely)
    with pytest.raises(GriditError, match="config.json in the same folder"):
        LatentCodec.from_path(lonely)
    state = load_file(folder / WEIGHTS)
    partial = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(GriditError, match="do not match its config"):
        LatentCodec.from_path(tmp_path / "partial.safetensors")


def test_pipeline_folder_uses_its_vae_subfolder(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "vae")
    assert LatentCodec.from_path(tmp_path).latent_channels == 4


def test_bad_paths_are_one_line_gridit_errors(diffusers, folder, tmp_path, offline):
    with pytest.raises(GriditError, match="VAE not found"):
        LatentCodec.from_path(tmp_path / "nope")
    unet = tmp_path / "unet"
    diffusers.UNet2DModel(
        sample_size=8, block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
    ).save_pretrained(unet)  # diffusers itself would load these weights into a VAE with only a warning
    with pytest.raises(GriditError, match="describes UNet2DModel, not an AutoencoderKL") as e:
        LatentCodec.from_path(unet)
    assert "\n" not in str(e.value)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(GriditError, match="cannot read VAE config"):
        LatentCodec.from_path(broken)
    (broken / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "block_out_channels": [32, 64]}))
    with pytest.raises(GriditError, match=f"cannot load the VAE from {re.escape(str(broken))}: ") as e:  # config and weights disagree
        LatentCodec.from_path(broken)
    assert "\n" not in str(e.value) and str(broken) in str(e.value)
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / WEIGHTS).unlink()
    with pytest.raises(GriditError, match="no file named"):
        LatentCodec.from_path(broken)
    (broken / "config.json").unlink()
    with pytest.raises(GriditError, match="has no config.json"):
        LatentCodec.from_path(broken)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GriditError, match="not a .safetensors"):
        LatentCodec.from_path(tmp_path / "notes.txt")


def test_missing_diffusers_names_the_install(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(GriditError, match="pip install diffusers"):
        LatentCodec.from_path(tmp_path)


def test_bad_tensors_are_gridit_errors(folder):
    codec = LatentCodec.from_path(folder)
    with pytest.raises(GriditError, match=r"\(N, 3, H, W\)"):
        codec.encode(torch.zeros(3, 16, 16))
    with pytest.raises(GriditError, match="not divisible"):
        codec.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(GriditError, match=r"\(N, 4, H, W\)"):
        codec.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(GriditError, match="batch_size"):
        codec.encode_batched(images(), batch_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_codec_on_cuda_matches_cpu_and_returns_on_the_input_device(folder):
    gpu, cpu = LatentCodec.from_path(folder, device="cuda"), LatentCodec.from_path(folder)
    assert gpu.device.type == "cuda" and next(gpu.vae.parameters()).is_cuda
    x = images(4)
    z = gpu.encode_batched(x, batch_size=2)  # CPU in, CPU out: only one batch at a time on the GPU
    assert z.device.type == "cpu" and torch.allclose(z, cpu.encode(x), atol=1e-4)
    assert torch.allclose(gpu.decode(z.cuda()).cpu(), cpu.decode(z), atol=1e-4)
    half = LatentCodec.from_path(folder, device="cuda", dtype=torch.float16)
    assert half.dtype == torch.float16 and half.encode(x).dtype == torch.float32
