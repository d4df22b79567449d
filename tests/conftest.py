"""Fixtures shared by several test files: a tiny randomly initialised diffusers AutoencoderKL, saved locally."""

import pytest
import torch

TINY_VAE = dict(
    block_out_channels=(8, 16),  # two blocks: one 2x downsampler
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
    layers_per_block=1,
)


@pytest.fixture(scope="session")
def diffusers():
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def make_tiny_vae(diffusers):
    """``make_tiny_vae(**overrides)``: a fresh AutoencoderKL of ``TINY_VAE`` (factor 2, 4 latent channels), seed 0."""

    def make(**overrides):
        torch.manual_seed(0)
        return diffusers.AutoencoderKL(**{**TINY_VAE, **overrides}).eval()

    return make


@pytest.fixture(scope="session")
def tiny_vae_folder(make_tiny_vae, tmp_path_factory):
    """The tiny VAE written with ``save_pretrained``: what a user passes to ``--vae``."""
    path = tmp_path_factory.mktemp("vae")
    make_tiny_vae().save_pretrained(path)
    return path
