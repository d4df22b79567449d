"""SamplingRun: the frames of ``gridit sample``'s library call for every family and with stage 2, progress, live
pictures and trajectory from the sampler's callback, and Stop within one model call keeping the frames made."""

import threading

import numpy as np
import pytest
import torch

from gridit_core.data.sources import FolderSequence
from gridit_core.errors import GriditError
from gridit_core.sampling import SampleConfig, sample_sequence
from gridit_core.sampling.two_stage import sample_two_stage
from gridit_core.training import load_sr, load_trained
from gridit_core.util.image import tensor_to_uint8
from widgets.common import load_stage1
from widgets.session import SamplingRun, Stoppable, Stopped

SETTINGS = {
    "grid": dict(sampler="ddpm", steps=3, resample=2, overlap=2),
    "tensor": dict(sampler="ddim", steps=3, eta=0.5, overlap=1),
    "msc": dict(sampler="ddim", steps=3, schedule="pyramid", chunk=2),
}


@pytest.mark.parametrize("arch", ["grid", "tensor", "msc"])
def test_a_run_gives_the_frames_of_the_library_call_gridit_sample_makes(ckpts, arch):
    loaded = load_stage1(ckpts[arch])
    run = SamplingRun(loaded, 7, SampleConfig(**SETTINGS[arch]), seed=5, every=2).run()
    assert run.state == "done" and run.error is None
    model, diffusion, cfg = load_trained(ckpts[arch])
    ref = sample_sequence(model, diffusion, 7, rows=cfg.rows, cols=cfg.cols, seed=5, progress=False, **SETTINGS[arch])
    assert torch.equal(run.result(), ref[0])
    assert run.progress["step"] == run.progress["steps"] and run.progress["unit"] == run.progress["units"] - 1
    assert run.live is not None and run.live[0].dtype.name == "uint8" and run.live[0].shape == run.live[1].shape
    assert run.trajectory and all(len(item) == 3 for item in run.trajectory)


def test_grid_progress_counts_grids_and_the_trajectory_follows_the_traced_grid(ckpts):
    loaded = load_stage1(ckpts["grid"])
    seen = []
    run = SamplingRun(loaded, 8, SampleConfig(steps=4, overlap=2), trace=1, on_update=lambda r: seen.append(dict(r.progress)))
    run.run()
    assert run.progress["units"] == 3  # 4 frames, then two grids of 2 new frames each
    assert [t for *_, t in run.trajectory] == sorted({t for *_, t in run.trajectory}, reverse=True)
    assert len(run.trajectory) == 4 and run.trajectory[0][0].shape == (32, 32, 3)  # grid 1's four steps
    assert {p["unit"] for p in seen} == {0, 1, 2}


def test_stop_ends_the_run_within_one_model_call_and_keeps_the_frames(ckpts):
    loaded = load_stage1(ckpts["grid"])
    calls = []
    loaded.model.register_forward_hook(lambda *a: calls.append(1))

    def stop_after_two_frames(run):
        if len(run.frames) == 2 and not run._event.is_set():
            run.stop()
            calls.clear()

    run = SamplingRun(loaded, 40, SampleConfig(steps=3, overlap=2), on_update=stop_after_two_frames).start()
    assert run.wait(60)
    assert run.state == "stopped" and len(run.frames) in (2, 3, 4) and calls == []
    assert run.result().shape[1:] == (3, 16, 16)


def test_stoppable_passes_attributes_and_refuses_calls_once_stopped():
    event = threading.Event()
    model = torch.nn.Linear(2, 2)
    wrapped = Stoppable(model, event)
    assert wrapped.weight is model.weight and torch.equal(wrapped(torch.ones(1, 2)), model(torch.ones(1, 2)))
    event.set()
    with pytest.raises(Stopped):
        wrapped(torch.ones(1, 2))


def test_stage_two_matches_sample_two_stage(ckpts, tmp_path):
    loaded = load_stage1(ckpts["grid"])
    sr = (*load_sr(ckpts["sr"]), None)
    opts = {"aug_level": 0.2, "steps": 2, "sampler": "ddim", "eta": 0.0, "batch": 3}
    run = SamplingRun(loaded, 5, SampleConfig(steps=2), seed=1, sr=sr, sr_opts=opts).run()
    assert run.state == "done" and run.result_hr().shape == (5, 3, 32, 32)
    model, diffusion, cfg = load_trained(ckpts["grid"])
    sample_two_stage(model, diffusion, cfg, *sr[:3], 5, tmp_path, sr_batch=3, aug_level=0.2, sr_steps=2, seed=1,
                     steps=2, progress=False)  # fmt: skip
    written = np.stack([np.asarray(im) for im in FolderSequence(tmp_path / "frames").frames(range(5))])
    assert np.array_equal(tensor_to_uint8(run.result_hr()), written)


def test_stop_during_stage_two_keeps_every_stage_one_frame(ckpts):
    sr = (*load_sr(ckpts["sr"]), None)

    def stop_in_stage_two(run):
        if run.progress["stage"] == 2 and run.hr:
            run.stop()

    run = SamplingRun(load_stage1(ckpts["grid"]), 6, SampleConfig(steps=2), sr=sr, sr_opts={"steps": 2, "batch": 2},
                      on_update=stop_in_stage_two).run()  # fmt: skip
    assert run.state == "stopped" and len(run.frames) == 6 and len(run.hr) == 2


def test_bad_settings_are_refused_before_the_thread_starts(ckpts):
    loaded = load_stage1(ckpts["msc"])
    with pytest.raises(GriditError, match="the full schedule denoises all frames at once"):
        SamplingRun(loaded, 9, SampleConfig(schedule="full"))
    sr = (*load_sr(ckpts["sr"]), None)
    with pytest.raises(GriditError, match="the stage-2 batch size must be a positive integer"):
        SamplingRun(load_stage1(ckpts["grid"]), 4, SampleConfig(), sr=sr, sr_opts={"batch": 0})
