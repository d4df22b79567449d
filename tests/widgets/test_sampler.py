"""SequenceSampler built headless: controls from the checkpoint and the registries, Run and Stop through their
handlers, what the views show afterwards, saving (the same files as ``gridit sample``), and bad input in red."""

import io

import numpy as np
import pytest
from PIL import Image

from gridit_core.cli import main
from gridit_core.sampling import CAUSAL_SCHEDULES
from widgets import SequenceSampler

pytestmark = pytest.mark.unit


def press(button):
    button.click()  # ipywidgets runs the on_click handlers in the kernel, as a press in the browser does


def test_controls_follow_the_checkpoints_saved_settings_and_family(ckpts):
    w = SequenceSampler(str(ckpts["grid_saved"]))
    c = w.controls
    assert (c["sampler"].value, c["steps"].value, c["overlap"].value, c["resample"].value) == ("ddpm", 3, 1, 2)
    assert c["overlap"].max == 3 and c["schedule"].layout.display == "none" and c["interpolate"].layout.display == ""
    assert "gridit-note" in w.status.value and "2x2 grid" in w.status.value and not w.run_button.disabled
    w.ckpt.value = str(ckpts["msc"])
    press(w.load_button)
    assert c["schedule"].options == CAUSAL_SCHEDULES and c["schedule"].layout.display == ""
    assert c["overlap"].layout.display == "none" and c["resample"].layout.display == "none"
    assert c["context"].value == w.loaded.model.span and c["steps"].value == 50  # no saved settings: SampleConfig's


def test_run_fills_the_live_view_frames_and_trajectory(ckpts):
    w = SequenceSampler(str(ckpts["grid"]), frames=6)
    w.controls["steps"].value = 3
    w.trace.value = 1
    press(w.run_button)
    assert w.wait(60) and w.current.state == "done"
    assert w.live_x.value and w.live_x0.value and w.live_x.value != w.live_x0.value
    assert (w.frame.max, w.play.max, w.step.max) == (5, 5, 2)
    assert w.bar.value == w.bar.max == 6 and "grid 2/2, step 3/3" in w.bar_label.value
    assert not w.run_button.disabled and w.stop_button.disabled and "done: 6 of 6 frames" in w.status.value
    first = w.view_lr.value
    w.frame.value = 5
    assert w.view_lr.value != first
    step0 = w.traj_x.value
    w.step.value = 2
    assert w.traj_x.value != step0 and w.step_label.value.startswith("step 3/3, t = ")


def test_stop_keeps_what_was_made(ckpts):
    w = SequenceSampler(str(ckpts["grid"]), frames=400)
    w.controls["steps"].value = 20
    press(w.run_button)
    assert not w.stop_button.disabled
    while not w.current.frames and w.current.running:
        w.current.wait(0.05)
    press(w.stop_button)
    assert w.wait(60) and w.current.state == "stopped"
    assert 0 < len(w.result()) < 400 and w.frame.max == len(w.result()) - 1
    assert f"stopped: {len(w.result())} of 400 frames" in w.status.value and not w.run_button.disabled


def test_saved_frames_equal_those_of_gridit_sample(ckpts, tmp_path):
    w = SequenceSampler(str(ckpts["grid_saved"]), frames=5, seed=7)
    press(w.run_button)
    w.wait(60)
    w.out_dir.value = str(tmp_path / "widget")
    press(w.save_button)
    assert main(["sample", "--ckpt", str(ckpts["grid_saved"]), "--frames", "5", "--seed", "7", "--out",
                 str(tmp_path / "cli")]) == 0  # fmt: skip
    for name in ("000000.png", "000004.png"):
        widget, cli = (np.asarray(Image.open(tmp_path / d / "frames" / name)) for d in ("widget", "cli"))
        assert np.array_equal(widget, cli)
    assert (tmp_path / "widget" / "sequence.gif").is_file() and not (tmp_path / "widget" / "frames" / "000005.png").exists()
    press(w.save_button)  # the folder now holds results: refused in red until overwrite is ticked
    assert "already holds results" in w.status.value and "color:#c00" in w.status.value
    w.overwrite.value = True
    press(w.save_button)
    assert "saved 5 frames" in w.status.value


def test_stage_two_shows_both_resolutions_and_saves_both(ckpts, tmp_path):
    w = SequenceSampler(str(ckpts["grid"]), frames=3, sr_ckpt=str(ckpts["sr"]))
    assert w.sr_box.layout.display == "" and w.sr_controls["sampler"].value == "ddim"
    w.controls["steps"].value = 2
    w.sr_controls["steps"].value = 2
    press(w.run_button)
    assert w.wait(60) and len(w.current.hr) == 3 and w.view_hr.value
    assert Image.open(io.BytesIO(w.view_hr.value)).size == (192, 192)
    assert w.save(tmp_path / "two") == tmp_path / "two"
    assert len(list((tmp_path / "two" / "frames_lr").glob("*.png"))) == 3
    assert Image.open(tmp_path / "two" / "frames" / "000000.png").size == (32, 32)


@pytest.mark.parametrize("path,message", [
    ("missing.pt", "checkpoint not found"),
    ("README.md", "cannot read checkpoint"),
])  # fmt: skip
def test_a_bad_checkpoint_shows_one_red_line_and_the_widget_stays_usable(ckpts, path, message):
    w = SequenceSampler(path)
    assert message in w.status.value and "color:#c00" in w.status.value and w.run_button.disabled
    press(w.run_button)  # disabled in the browser; called anyway, it says why
    assert "load a checkpoint first" in w.status.value
    w.ckpt.value = str(ckpts["grid"])
    press(w.load_button)
    assert "gridit-note" in w.status.value and not w.run_button.disabled


def test_a_stage_two_checkpoint_of_the_wrong_scale_or_stage_shows_in_red(ckpts, make_checkpoint, tmp_path):
    w = SequenceSampler(str(ckpts["grid"]), frames=2, sr_ckpt=str(make_checkpoint(tmp_path / "x4.pt", stage=2, scale=4)))
    press(w.run_button)
    assert "makes 32px frames from 8px ones (x4), but stage 1 makes 16px frames" in w.status.value
    w.sr_ckpt.value = str(ckpts["grid"])
    press(w.run_button)
    assert "stage-1 (grid) checkpoint" in w.status.value and w.current is None
