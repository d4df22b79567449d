import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.training import TrainConfig, Trainer, load_trained, lr_factor, read_metrics
from gridit_core.util.io import load_file

pytestmark = pytest.mark.unit

TINY = dict(
    data="builtin:bouncing", model="DiT-N/4", rows=2, cols=2, frame_size=8, batch_size=4, n_sequences=12,
    model_kwargs={"depth": 1, "hidden_size": 32, "num_heads": 2}, builtin={"length": 12, "radius": (1.5, 2.0)},
    diffusion={"num_steps": 50}, log_every=1, ckpt_every=2, warmup=2, device="cpu",
)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now: the OS picks it when a socket binds port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def test_loss_falls_and_outputs_are_written(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 12, "lr": 3e-3})
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit(progress=False)
    log = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in log] == list(range(1, 13))
    assert sum(m["loss"] for m in log[-3:]) < sum(m["loss"] for m in log[:3])
    state = load_file(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 12 and set(state) >= {"model", "ema", "opt", "sched", "generator", "config"}
    model, diffusion, loaded_cfg = load_trained(tmp_path / "run" / "checkpoints" / "last.pt")
    assert torch.equal(params(model), params(trainer.ema)) and loaded_cfg == cfg


def test_resume_is_exact(tmp_path):
    straight = Trainer(TrainConfig(**{**TINY, "steps": 4}), tmp_path / "a")
    straight.fit(progress=False)
    first = Trainer(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "b")
    first.fit(progress=False)
    resumed = Trainer(TrainConfig(**{**TINY, "steps": 4}), tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.fit(progress=False)
    assert torch.equal(params(straight.model), params(resumed.model))
    assert torch.equal(params(straight.ema), params(resumed.ema))


def test_ema_and_lr_step_once_per_optimizer_step(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 3, "grad_accum": 2, "warmup": 4, "ema_decay": 0.5, "ema_warmup": False})
    trainer = Trainer(cfg, tmp_path / "run")
    before = params(trainer.model)
    trainer.train_step()
    assert trainer.step == 1 and trainer.sched.last_epoch == 1
    assert trainer.opt.param_groups[0]["lr"] == cfg.lr * lr_factor(1, 4)  # what LambdaLR computes
    # one EMA update with decay 0.5 lands halfway between the old and the new weights
    expected = 0.5 * before + 0.5 * params(trainer.model)
    assert torch.allclose(params(trainer.ema), expected, atol=1e-6)
    assert trainer.batches.drawn == 4  # two micro-batches of two


def test_cosine_decay_warms_up_peaks_once_and_falls_to_near_zero(tmp_path):
    steps, warmup = 20, 4
    f = [lr_factor(s, warmup, "cosine", steps) for s in range(steps)]
    assert f[:warmup] == [lr_factor(s, warmup) for s in range(warmup)] and f[warmup - 1] == 1.0
    assert all(a > b for a, b in zip(f[warmup - 1 :], f[warmup:]))  # strictly falling after the peak
    assert 0 < f[-1] < 0.01 and f[warmup - 1 + (steps - warmup + 1) // 2] == pytest.approx(0.5, abs=0.1)
    assert lr_factor(7, 0, "cosine", 7) == 0.0 and lr_factor(0, 0, "cosine", 7) == 1.0
    # the trainer's optimizer follows it, and the schedule survives a resume
    cfg = TrainConfig(**{**TINY, "steps": 4, "warmup": 1, "lr_decay": "cosine", "ckpt_every": 2})
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.train_step()
    trainer.train_step()
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx(cfg.lr * lr_factor(2, 1, "cosine", 4), rel=1e-12)
    trainer.save()
    resumed = Trainer(cfg, tmp_path / "run", resume=True)
    assert resumed.opt.param_groups[0]["lr"] == trainer.opt.param_groups[0]["lr"]
    with pytest.raises(GriditError, match="unknown learning-rate decay 'linear'"):
        TrainConfig(**{**TINY, "lr_decay": "linear"})


def test_ema_warmup_forgets_the_initial_weights(tmp_path):
    trainer = Trainer(TrainConfig(**{**TINY, "steps": 1, "ema_decay": 0.9999}), tmp_path / "run")
    before = params(trainer.model)
    trainer.train_step()  # first step: decay min(0.9999, 1/10)
    assert torch.allclose(params(trainer.ema), 0.1 * before + 0.9 * params(trainer.model), atol=1e-6)


def test_refuses_existing_run_and_bad_config(tmp_path):
    Trainer(TrainConfig(**{**TINY, "steps": 1}), tmp_path / "run").fit(progress=False)
    with pytest.raises(GriditError, match="already holds a training run"):
        Trainer(TrainConfig(**{**TINY, "steps": 1}), tmp_path / "run")
    with pytest.raises(GriditError, match="not divisible by grad_accum"):
        TrainConfig(**{**TINY, "batch_size": 3, "grad_accum": 2})
    with pytest.raises(GriditError, match="another model configuration"):
        Trainer(TrainConfig(**{**TINY, "model_kwargs": {"depth": 2, "hidden_size": 32, "num_heads": 2}}), tmp_path / "run", resume=True)


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    """Two gloo ranks see different grids and noise, yet all-reduced gradients keep their weights identical."""
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch\n"
        "from gridit_core.training import Trainer, TrainConfig\n"
        f"cfg = TrainConfig(**{{**{TINY!r}, 'steps': 2, 'batch_size': 4, 'grad_accum': 2}})\n"
        "t = Trainer(cfg, sys.argv[1])\n"
        "init = {k: v.clone() for k, v in t.model.state_dict().items()}\n"
        "t.fit(progress=False)\n"
        "torch.save({'init': init, 'final': t.model.state_dict(), 'drawn': t.batches.drawn}, f'{sys.argv[1]}/rank{t.rank}.pt')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(script), str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["drawn"] == r1["drawn"] == 8
    for k in r0["final"]:
        assert torch.equal(r0["final"][k], r1["final"][k]), f"ranks disagree on {k}"
    assert any(not torch.equal(r0["final"][k], r0["init"][k]) for k in r0["final"])
    log = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    assert len(log) == 2  # only rank 0 writes


def test_exported_safetensors_sample_like_the_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from gridit_core.training import export_weights

    trainer = Trainer(TrainConfig(**{**TINY, "steps": 2}), tmp_path / "run")
    trainer.fit(progress=False)
    out = export_weights(tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "w.safetensors")
    model, _, cfg = load_trained(out)
    assert torch.equal(params(model), params(trainer.ema)) and cfg.rows == 2
    save_file({"x": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(GriditError, match="no GriDiT stage-1 metadata"):
        load_trained(tmp_path / "bare.safetensors")
