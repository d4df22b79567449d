"""Both stages in the latent space of a local VAE (``--vae``), with a tiny random AutoencoderKL (factor 2, 4 channels)."""

import shutil

import pytest
import torch
from PIL import Image

from gridit_core.cli import main
from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.models.codec import LatentCodec, encode_grid
from gridit_core.models.sr import build_sr_model
from gridit_core.training.losses import sr_training_losses
from gridit_core.util.io import load_file

pytestmark = pytest.mark.unit

SMALL = '{"depth": 1, "hidden_size": 32, "num_heads": 2}'


def train(out, frame_size, *extra, stage=1):
    grid = ["--rows", 2, "--cols", 2] if stage == 1 else ["--stage", 2, "--scale", 2]
    args = ["train", "--data", "builtin:bouncing", "--model", "DiT-N/4", "--frame-size", frame_size, *grid, "--steps", 2,
            "--batch-size", 4, "--n-sequences", 4, "--warmup", 1, "--device", "cpu", "--model-kwargs", SMALL,
            "--out", out, *extra]
    return [str(a) for a in args]


def one_error_line(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def sizes(folder):
    files = sorted(folder.iterdir())
    with Image.open(files[0]) as img:
        return len(files), img.size


@pytest.fixture(scope="module")
def runs(tiny_vae_folder, tmp_path_factory):
    """2-step runs: a latent stage 1 on 16 px frames, a pixel stage 1 on 8 px frames, a latent x2 stage 2 at 16 px."""
    root = tmp_path_factory.mktemp("latent")
    assert main(train(root / "s1", 16, "--vae", tiny_vae_folder)) == 0
    assert main(train(root / "px", 8)) == 0
    assert main(train(root / "s2", 16, "--vae", tiny_vae_folder, "--vae-scale", "0.5", stage=2)) == 0
    return {name: root / name / "checkpoints" / "last.pt" for name in ("s1", "px", "s2")}


def test_encode_grid_encodes_each_frame_on_its_own(tiny_vae_folder):
    codec = LatentCodec.from_path(tiny_vae_folder)
    grid = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 2x3 frames of 16x16
    z = encode_grid(codec, grid, rows=2, cols=3)
    assert z.shape == (2, 4, 16, 24)
    assert torch.allclose(z[:, :, 8:16, 16:24], codec.encode(grid[:, :, 16:32, 32:48]), atol=1e-5)  # frame 5 alone


def test_latent_models_are_sized_for_the_latents(runs, tiny_vae_folder):
    s1, s2 = load_file(runs["s1"]), load_file(runs["s2"])
    assert s1["model_config"]["in_channels"] == 4 and tuple(s1["model_config"]["input_size"]) == (16, 16)
    assert s1["config"]["vae"] == str(tiny_vae_folder)
    assert s2["model_config"]["in_channels"] == 8 and tuple(s2["model_config"]["input_size"]) == (8, 8)
    assert s2["config"]["vae_scale"] == 0.5


@pytest.mark.slow
def test_latent_stage1_samples_rgb_frames_and_follows_a_moved_vae(capsys, runs, tiny_vae_folder, tmp_path):
    sample = ["sample", "--ckpt", runs["s1"], "--frames", 5, "--steps", 2, "--device", "cpu"]
    assert main([str(a) for a in sample + ["--out", tmp_path / "a"]]) == 0
    assert sizes(tmp_path / "a" / "frames") == (5, (16, 16))
    moved = tmp_path / "moved_vae"
    shutil.copytree(tiny_vae_folder, moved)
    held = tiny_vae_folder.with_name(tiny_vae_folder.name + "_away")
    tiny_vae_folder.rename(held)  # the path saved in the checkpoint is gone
    try:
        line = one_error_line(capsys, sample + ["--out", tmp_path / "b"])
        assert f"trained in the latents of the VAE {tiny_vae_folder}, which is not there; pass --vae PATH" in line
        assert not (tmp_path / "b").exists()
        assert main([str(a) for a in sample + ["--out", tmp_path / "b", "--vae", moved]]) == 0
    finally:
        held.rename(tiny_vae_folder)
    assert all(f.read_bytes() == (tmp_path / "b" / "frames" / f.name).read_bytes() for f in (tmp_path / "a" / "frames").iterdir())


@pytest.mark.slow
def test_pixel_stage1_then_latent_stage2_then_upscale_alone(capsys, runs, tmp_path):
    out = tmp_path / "two"
    args = ["sample", "--ckpt", runs["px"], "--sr-ckpt", runs["s2"], "--frames", 3, "--steps", 2, "--sr-batch", 2,
            "--device", "cpu", "--out", out]
    assert main([str(a) for a in args]) == 0
    assert sizes(out / "frames_lr") == (3, (8, 8)) and sizes(out / "frames") == (3, (16, 16))
    up = ["upscale", "--ckpt", runs["s2"], "--input", out / "frames_lr", "--out", tmp_path / "up", "--steps", 2,
          "--batch-size", 2, "--device", "cpu"]
    assert main([str(a) for a in up]) == 0
    assert all((tmp_path / "up" / "frames" / f.name).read_bytes() == f.read_bytes() for f in (out / "frames").iterdir())


def test_bad_vae_settings_are_one_line_and_touch_nothing(capsys, runs, tiny_vae_folder, make_tiny_vae, tmp_path):
    line = one_error_line(capsys, train(tmp_path / "r", 16, "--vae", tmp_path / "nope"))
    assert f"VAE not found: {tmp_path / 'nope'}" in line
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    line = one_error_line(capsys, train(tmp_path / "r", 16, "--vae", tmp_path / "unet"))
    assert "describes UNet2DModel, not an AutoencoderKL" in line
    line = one_error_line(capsys, train(tmp_path / "r", 16, "--vae-scale", "0.5"))
    assert "--vae-scale without --vae" in line
    line = one_error_line(capsys, train(tmp_path / "r", 17, "--vae", tiny_vae_folder))
    assert "frame size 17 is not divisible by the VAE's downsampling factor 2" in line
    line = one_error_line(capsys, train(tmp_path / "r", 18, "--vae", tiny_vae_folder))
    assert "frame size 9 is not divisible by the patch size 4 (the VAE's latents of 18px frames are 9px)" in line
    assert not (tmp_path / "r").exists()
    sample = ["sample", "--ckpt", runs["px"], "--frames", 3, "--steps", 2, "--device", "cpu", "--out", tmp_path / "o"]
    line = one_error_line(capsys, sample + ["--vae", tiny_vae_folder])
    assert "neither stage was trained in a VAE's latents" in line
    make_tiny_vae(latent_channels=2).save_pretrained(tmp_path / "two_channels")
    line = one_error_line(capsys, ["upscale", "--ckpt", runs["s2"], "--input", tmp_path, "--out", tmp_path / "o",
                                   "--vae", tmp_path / "two_channels"])
    assert "has 2 latent channels at 1/2 size, but the model was trained on 4 channels of 8px for 16px frames" in line
    line = one_error_line(capsys, sample[:2] + [runs["s1"]] + sample[3:] + ["--vae", tmp_path / "two_channels"])
    assert "has 2 latent channels" in line
    assert not (tmp_path / "o").exists()


def test_latent_stage2_loss_diffuses_the_latent_residual(tiny_vae_folder):
    codec = LatentCodec.from_path(tiny_vae_folder)
    model = build_sr_model("DiT-N/4", 16, 2, channels=4, factor=2, learn_sigma=False, depth=1, hidden_size=32,
                           num_heads=2)  # fmt: skip
    diffusion = Diffusion(DiffusionConfig(prediction="x0"))
    hr = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seen = {}
    real = diffusion.training_losses

    def spy(net, x, **kwargs):
        seen["x"], seen["cond"] = x, kwargs["model_kwargs"]["lr_up"]
        return real(net, x, **kwargs)

    diffusion.training_losses = spy
    out = sr_training_losses(diffusion, model, hr, None, torch.Generator().manual_seed(1), max_aug=0.0, codec=codec)
    assert torch.isfinite(out["loss"]).all() and seen["x"].shape == (3, 4, 8, 8)
    assert torch.allclose(seen["x"] + seen["cond"], codec.encode(hr), atol=1e-5)  # residual + base = the HR latents
