import pytest
import torch
from safetensors.torch import save_file

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.models import build_dit
from gridit_core.models.sr import SRDenoiser, build_sr_model, noise_augment
from gridit_core.sampling.upscale import upscale_frames
from gridit_core.training import TrainConfig, Trainer, export_weights, load_sr, load_trained
from gridit_core.training.losses import sr_training_losses

pytestmark = pytest.mark.unit

SMALL = dict(depth=1, hidden_size=32, num_heads=2)
TINY = dict(
    stage=2, scale=4, data="builtin:bouncing", model="DiT-N/4", frame_size=16, batch_size=4, n_sequences=2,
    model_kwargs=SMALL, builtin={"length": 4, "radius": (2.0, 3.0)}, diffusion={"num_steps": 50},
    log_every=1, ckpt_every=2, warmup=2, device="cpu",
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturbed(model, seed=0):
    """The model with every weight nudged off its adaLN-Zero init, so every input reaches the output."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_forward_shapes(scale, learn_sigma):
    model = build_sr_model("DiT-N/4", 16, scale, learn_sigma=learn_sigma, **SMALL)
    assert model.config.in_channels == 6 and model.out_channels == (6 if learn_sigma else 3)
    x, lr_up = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    out = SRDenoiser(model)(x, torch.tensor([0, 9]), lr_up=lr_up, aug_level=torch.tensor([0.0, 0.2]))
    assert out.shape == (2, model.out_channels, 16, 16)
    assert all(k.startswith(("aug_embedder.",)) or k in build_dit("DiT-N/4", **SMALL).state_dict()
               for k in model.state_dict())  # official names, plus the new embedder


def test_zero_output_at_init_and_the_level_matters_once_trained():
    model = build_sr_model("DiT-N/4", 16, 4, **SMALL).eval()
    x, lr_up, t = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.tensor([3, 30])
    net = SRDenoiser(model)
    assert torch.equal(net(x, t, lr_up=lr_up, aug_level=torch.tensor([0.1, 0.1])), torch.zeros(2, 3, 16, 16))
    net = SRDenoiser(perturbed(model))
    low = net(x, t, lr_up=lr_up, aug_level=torch.tensor([0.0, 0.0]))
    high = net(x, t, lr_up=lr_up, aug_level=torch.tensor([0.3, 0.3]))
    assert (low - high).abs().max() > 1e-3
    assert (low - net(x, t, lr_up=-lr_up, aug_level=torch.tensor([0.0, 0.0]))).abs().max() > 1e-3


def test_bad_models_and_inputs_raise():
    with pytest.raises(GriditError, match="scale must be one of 2, 4"):
        build_sr_model("DiT-N/4", 16, 3, **SMALL)
    with pytest.raises(GriditError, match="not divisible by the scale factor 4"):
        build_sr_model("DiT-N/4", 18, 4, **SMALL)
    model = build_sr_model("DiT-N/4", 16, 4, **SMALL)
    with pytest.raises(GriditError, match="aug_level of shape"):
        model(torch.zeros(1, 6, 16, 16), torch.tensor([1]))
    stage1 = build_dit("DiT-N/4", input_size=16, in_channels=3, **SMALL)
    with pytest.raises(GriditError, match="no augmentation-level input"):
        stage1(torch.zeros(1, 3, 16, 16), torch.tensor([1]), aug_level=torch.tensor([0.1]))


def test_noise_augmentation_is_variance_preserving():
    x = torch.randn(2, 3, 32, 32, generator=gen())
    assert torch.equal(noise_augment(x, torch.zeros(2), gen()), x)
    pure = noise_augment(x, torch.ones(2), gen(1))
    assert torch.equal(pure, torch.randn(2, 3, 32, 32, generator=gen(1)))


def test_training_loss_is_finite_and_falls():
    torch.manual_seed(0)
    model = build_sr_model("DiT-N/4", 16, 4, **SMALL)
    diffusion = Diffusion(DiffusionConfig(num_steps=50))
    hr = torch.rand(4, 3, 16, 16, generator=gen(2)) * 2 - 1

    def loss():
        return sr_training_losses(diffusion, model, hr, None, gen(7))["loss"].mean()

    with torch.no_grad():
        before = loss()
    assert torch.isfinite(before)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the degradations stay in float32
        assert torch.isfinite(sr_training_losses(diffusion, model, hr, None, gen(7))["loss"]).all()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        assert loss() < 0.8 * before


def test_upscale_is_deterministic_and_checks_sizes():
    model = perturbed(build_sr_model("DiT-N/4", 16, 4, **SMALL))
    diffusion = Diffusion(DiffusionConfig(num_steps=50))
    lr = torch.rand(3, 3, 4, 4, generator=gen()) * 2 - 1
    seen = []
    out = upscale_frames(model, diffusion, lr, scale=4, steps=3, seed=1, batch_size=2, callback=seen.append)
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1
    assert torch.equal(out, upscale_frames(model, diffusion, lr, scale=4, steps=3, seed=1, batch_size=2))
    assert not torch.equal(out, upscale_frames(model, diffusion, lr, scale=4, steps=3, seed=2, batch_size=2))
    ddpm = upscale_frames(model, diffusion, lr, scale=4, sampler="ddpm", steps=3, seed=1)
    assert ddpm.shape == out.shape and not torch.equal(ddpm, out)
    assert [(s["batch"], s["i"]) for s in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(GriditError, match="8x8 times 4 give 32x32, but the model makes 16x16"):
        upscale_frames(model, diffusion, torch.zeros(1, 3, 8, 8), scale=4)
    with pytest.raises(GriditError, match="not a stage-2"):
        upscale_frames(build_dit("DiT-N/4", input_size=16, in_channels=3, **SMALL), diffusion, lr, scale=4)


def test_residual_model_starts_at_bicubic_and_its_target_is_the_residual():
    """adaLN-Zero outputs 0 at init; predicting x0 of the residual, an untrained model returns the bicubic upsample."""
    model = build_sr_model("DiT-N/4", 16, 4, **SMALL).eval()
    diffusion = Diffusion(DiffusionConfig(num_steps=50, prediction="x0"))
    lr = torch.rand(2, 3, 4, 4, generator=gen()) * 2 - 1
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    for sampler in ("ddim", "ddpm"):
        out = upscale_frames(model, diffusion, lr, scale=4, sampler=sampler, steps=3, aug_level=0.2)
        assert torch.equal(out, bicubic.clamp(-1, 1))  # a zero residual on the bicubic base
    plain = upscale_frames(model, diffusion, lr, scale=4, residual=False, steps=3)
    assert (plain == 0).all()  # the frame itself predicted as 0

    targets = []
    diffusion.training_losses = lambda net, x, **kwargs: targets.append((x, kwargs["model_kwargs"])) or {}
    hr = torch.rand(2, 3, 16, 16, generator=gen(3)) * 2 - 1
    sr_training_losses(diffusion, model, hr, None, gen(1), max_aug=0.0)
    sr_training_losses(diffusion, model, hr, None, gen(1), max_aug=0.0, residual=False)
    (residual, kw), (frame, _) = targets
    assert torch.equal(frame, hr) and torch.allclose(residual + kw["lr_up"], hr, atol=1e-6)  # level 0: cond = base


def test_stage2_trainer_resumes_exactly_and_checkpoints_know_their_stage(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 2})
    assert cfg.rows == cfg.cols == 1
    straight = Trainer(TrainConfig(**{**TINY, "steps": 3}), tmp_path / "a")
    straight.fit(progress=False)
    Trainer(cfg, tmp_path / "b").fit(progress=False)
    resumed = Trainer(TrainConfig(**{**TINY, "steps": 3}), tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.fit(progress=False)
    assert torch.equal(params(straight.model), params(resumed.model))
    assert torch.equal(params(straight.ema), params(resumed.ema))

    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    model, diffusion, loaded = load_sr(ckpt)
    assert loaded.scale == 4 and torch.equal(params(model), params(straight.ema))
    assert upscale_frames(model, diffusion, torch.zeros(1, 3, 4, 4), scale=loaded.scale, steps=2).shape[-2:] == (16, 16)
    with pytest.raises(GriditError, match="is a stage-2 \\(super-resolution\\) checkpoint; use it with --sr-ckpt"):
        load_trained(ckpt)
    exported = export_weights(ckpt, tmp_path / "sr.safetensors")
    assert torch.equal(params(load_sr(exported)[0]), params(model))
    with pytest.raises(GriditError, match="is a stage-2"):
        load_trained(exported)
    torch.save({"kind": "gridit-stage1"}, tmp_path / "stage1.pt")
    save_file({"x": torch.zeros(1)}, tmp_path / "stage1.safetensors", metadata={"kind": "gridit-stage1"})
    for path in (tmp_path / "stage1.pt", tmp_path / "stage1.safetensors"):
        with pytest.raises(GriditError, match="is a stage-1 \\(grid\\) checkpoint"):
            load_sr(path)


def test_stage2_config_checks():
    with pytest.raises(GriditError, match="scale must be one of 2, 4"):
        TrainConfig(**{**TINY, "scale": 3})
    with pytest.raises(GriditError, match="frame size 18 is not divisible by the scale factor 4"):
        TrainConfig(**{**TINY, "frame_size": 18})
    with pytest.raises(GriditError, match="degrade scale 2 differs"):
        TrainConfig(**{**TINY, "degrade": {"scale": 2}})
    with pytest.raises(GriditError, match="stage must be 1 or 2"):
        TrainConfig(**{**TINY, "stage": 3})


def test_saved_stage2_configs_without_residual_diffused_the_frame():
    saved = {**TINY, "steps": 2}
    assert TrainConfig.from_dict(saved).residual is False  # saved before the field existed
    assert TrainConfig.from_dict({**saved, "residual": True}).residual is True
    assert TrainConfig(**saved).residual is True  # new runs default to the residual
