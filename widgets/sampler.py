"""SequenceSampler: settings from the registries and the checkpoint, Run and Stop, a live view of the grid being
denoised, then a frame viewer, a trajectory scrubber and saving. The work is ``widgets.session.SamplingRun``."""

import time
from pathlib import Path

import ipywidgets as W

from gridit_core.diffusion import STEPPER_KINDS
from gridit_core.errors import GriditError
from gridit_core.sampling import CAUSAL_SCHEDULES, FAMILIES, SAMPLE_OUTPUTS, SampleConfig
from gridit_core.sampling.config import CONDITIONINGS, CONTEXT_MODES
from gridit_core.sampling.families import DEFAULT_FAMILY
from gridit_core.sampling.upscale import SAMPLE_AUG
from gridit_core.util.io import FrameWriter, prepare_output_dir
from widgets.common import display_zoom, error_html, guarded, load_stage1, note_html, png_bytes, to_uint8, zoom
from widgets.session import SamplingRun

LIVE_INTERVAL = 0.05  # seconds between live-view pushes from the sampling thread (at most 20 per second)
SR_BATCH = 16  # gridit sample's --sr-batch default


def _int(description, value, **kw):
    return W.BoundedIntText(value=value, description=description, min=kw.pop("min", 0), max=kw.pop("max", 10**6), **kw)


def _image():
    return W.Image(format="png")  # shown at its own size: pictures are enlarged in Python (``zoom``)


class SequenceSampler(W.VBox):
    """Sample a sequence from a checkpoint (``ckpt``: a path or a model object) and look at it; see widgets/README.md.

    ``sr_ckpt`` names an optional stage-2 checkpoint. ``run()`` is what the Run button does; ``wait()`` waits for
    the run to end; ``result()`` gives its frames ``(T, 3, H, W)``.
    """

    def __init__(self, ckpt=None, *, diffusion=None, sr_ckpt="", frames=16, seed=0, device="cpu"):
        self.device, self.loaded, self.sr, self.current = device, None, None, None
        self._last_push = 0.0
        self.status = W.HTML()
        self.ckpt = W.Text(value=ckpt if isinstance(ckpt, str) else "", description="checkpoint",
                           layout=W.Layout(width="420px"))  # fmt: skip
        self.load_button = W.Button(description="Load")
        self.sr_ckpt = W.Text(value=str(sr_ckpt or ""), description="stage 2", placeholder="optional stage-2 checkpoint",
                              layout=W.Layout(width="420px"))  # fmt: skip
        self.controls = {
            "sampler": W.Dropdown(options=STEPPER_KINDS, description="sampler"),
            "steps": _int("steps", 50, min=1),
            "eta": W.BoundedFloatText(value=0.0, min=0, max=1, step=0.1, description="eta"),
            "resample": _int("resample", 1, min=1),
            "overlap": _int("overlap", 0),
            "interpolate": W.Checkbox(description="in-betweening"),
            "conditioning": W.Dropdown(options=CONDITIONINGS, description="conditioning"),
            "guidance": W.BoundedFloatText(value=0.0, min=0, max=1e3, step=0.5, description="reconstruction"),
            "schedule": W.Dropdown(options=CAUSAL_SCHEDULES, description="schedule"),
            "chunk": _int("chunk", 1, min=1),
            "context": _int("context", 0),
            "context_noise": W.BoundedFloatText(value=0.0, min=0, max=0.99, step=0.05, description="context noise"),
            "context_mode": W.Dropdown(options=CONTEXT_MODES, description="context mode"),
        }
        self.seed = _int("seed", seed, max=2**63 - 1)
        self.n_frames = _int("frames", frames, min=1)
        self.every = _int("live every", 1, min=1)
        self.trace = _int("trajectory of", 0, style={"description_width": "initial"})
        self.sr_controls = {"sampler": W.Dropdown(options=STEPPER_KINDS, value="ddim", description="sr sampler"),
                            "steps": _int("sr steps", 50, min=1), "batch": _int("sr batch", SR_BATCH, min=1),
                            "aug_level": W.BoundedFloatText(value=SAMPLE_AUG, min=0, max=1, step=0.05, description="noise level")}
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.bar = W.IntProgress(value=0, min=0, max=1, description="progress")
        self.bar_label = W.Label()
        self.live_x, self.live_x0 = _image(), _image()
        self.play = W.Play(interval=125, min=0, max=0, description="play")
        self.frame = W.IntSlider(min=0, max=0, description="frame")
        W.jslink((self.play, "value"), (self.frame, "value"))
        self.view_lr, self.view_hr = _image(), _image()
        self.step = W.IntSlider(min=0, max=0, description="step")
        self.step_label = W.Label()
        self.traj_x, self.traj_x0 = _image(), _image()
        self.out_dir = W.Text(value="samples/widget", description="folder")
        self.overwrite = W.Checkbox(description="overwrite")
        self.save_button = W.Button(description="Save frames + GIF", icon="save")
        self._wire()
        super().__init__(self._layout())
        for widget, name in ((self, "gridit-sampler"), (self.status, "gridit-status"), (self.view_lr, "gridit-frame-lr"),
                             (self.live_x, "gridit-live-x"), (self.n_frames, "gridit-frames")):
            widget.add_class(name)  # stable handles for the browser test and for styling
        if ckpt is not None:
            self.load(ckpt, diffusion=diffusion)

    # -- layout and wiring -----------------------------------------------------------------------------------------

    def _layout(self):
        labelled = lambda text, *ws: W.VBox([W.HTML(f"<b>{text}</b>"), *ws])  # noqa: E731
        settings = W.GridBox(
            [*self.controls.values(), self.seed, self.n_frames, self.every, self.trace],
            layout=W.Layout(grid_template_columns="repeat(3, 310px)"),
        )  # fmt: skip
        self.sr_box = W.HBox(list(self.sr_controls.values()))
        return [
            W.HBox([self.ckpt, self.load_button]), self.sr_ckpt, self.status, settings, self.sr_box,
            W.HBox([self.run_button, self.stop_button, self.bar, self.bar_label]),
            labelled("live: x_t | predicted x0", W.HBox([self.live_x, self.live_x0])),
            labelled("frames (and stage 2 beside them, when it ran)", W.HBox([self.play, self.frame]), W.HBox([self.view_lr, self.view_hr])),
            labelled("trajectory of one grid: x_t | predicted x0", W.HBox([self.step, self.step_label]),
                     W.HBox([self.traj_x, self.traj_x0])),
            W.HBox([self.out_dir, self.overwrite, self.save_button]),
        ]  # fmt: skip

    def _wire(self):
        self.load_button.on_click(lambda _: self.load(self.ckpt.value))
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self.save())
        self.frame.observe(lambda _: self._show_frame(), "value")
        self.step.observe(lambda _: self._show_step(), "value")
        self.sr_ckpt.observe(lambda _: self._show_sr_box(), "value")

    def _show_sr_box(self):
        self.sr_box.layout.display = "" if self.sr_ckpt.value.strip() else "none"

    # -- loading ---------------------------------------------------------------------------------------------------

    @guarded
    def load(self, ckpt, diffusion=None):
        """Load a stage-1 checkpoint (or take a model object) and set the controls to its saved sampling settings."""
        if isinstance(ckpt, str) and not ckpt.strip():
            raise GriditError("name a checkpoint file")
        self.loaded = None
        self.run_button.disabled = True
        loaded = load_stage1(ckpt, diffusion, device=self.device)
        family = loaded.family
        saved = SampleConfig(**loaded.sampling)
        for name, control in self.controls.items():
            control.layout.display = "" if name in family.sample_fields else "none"
            value = getattr(saved, name)
            if name == "overlap" and value is None:
                value = family.default_overlap(loaded.model)
            if name == "context" and value is None:
                value = getattr(loaded.model, "span", 0)
            control.value = value
        self.controls["overlap"].max = loaded.window - 1
        self.trace.description = f"trajectory of {family.traced}"
        self.loaded = loaded
        self.run_button.disabled = False
        self._show_sr_box()
        self.status.value = note_html(loaded.describe())
        return loaded

    def _load_sr(self):
        path = self.sr_ckpt.value.strip()
        if not path:
            return None
        from gridit_core.training import load_codec, load_sr

        model, diffusion, cfg = load_sr(path, device=self.device)
        frame = self.loaded.frame_hw[0] * getattr(self.loaded.codec, "downsample_factor", 1)
        if cfg.frame_size != frame * cfg.scale:
            raise GriditError(f"the stage-2 model makes {cfg.frame_size}px frames from {cfg.frame_size // cfg.scale}px "
                              f"ones (x{cfg.scale}), but stage 1 makes {frame}px frames")  # fmt: skip
        return model, diffusion, cfg, load_codec(cfg, model, device=self.device)

    def settings(self):
        """The ``SampleConfig`` the controls describe (the fields the loaded architecture uses)."""
        family = self.loaded.family if self.loaded else FAMILIES[DEFAULT_FAMILY]
        return SampleConfig(**{k: self.controls[k].value for k in family.sample_fields})

    # -- running ---------------------------------------------------------------------------------------------------

    @guarded
    def run(self):
        """Start sampling with the current settings, off the UI thread (what Run does)."""
        if self.loaded is None:
            raise GriditError("load a checkpoint first")
        if self.current is not None and self.current.running:
            raise GriditError("a run is in progress: stop it first")
        sr = self._load_sr()
        sr_opts = {k: c.value for k, c in self.sr_controls.items()}
        run = SamplingRun(self.loaded, self.n_frames.value, self.settings(), seed=self.seed.value, trace=self.trace.value,
                          every=self.every.value, sr=sr, sr_opts=sr_opts, on_update=self._on_update)  # fmt: skip
        self.current = run
        for im in (self.view_lr, self.view_hr, self.traj_x, self.traj_x0):
            im.value = b""
        self.frame.max = self.play.max = self.step.max = 0
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = note_html("sampling...")
        run.start()
        return run

    def stop(self):
        """Ask the run to end within one model call (what Stop does); the frames made so far are kept."""
        if self.current is not None:
            self.current.stop()

    def wait(self, timeout=None):
        """Wait for the current run to end; True if it has."""
        return self.current.wait(timeout) if self.current is not None else True

    def result(self):
        """The frames of the last run ``(T, 3, H, W)`` in [-1, 1] (stage 1), or None."""
        return self.current.result() if self.current is not None else None

    def _on_update(self, run):
        """From the sampling thread: progress and live view (at most every ``LIVE_INTERVAL``), frames, the end."""
        ended = not run.running and run.state != "ready"
        now = time.perf_counter()
        if not ended and now - self._last_push < LIVE_INTERVAL:
            return
        self._last_push = now
        p = run.progress
        self.bar.max, self.bar.value = p["units"] * p["steps"], p["unit"] * p["steps"] + p["step"]
        unit = self.loaded.family.unit if p["stage"] == 1 else "stage-2 batch"
        self.bar_label.value = f"{unit} {p['unit'] + 1}/{p['units']}, step {p['step']}/{p['steps']}; {len(run.frames)} frames"
        if run.live is not None:
            z = display_zoom(run.live[0].shape[0])
            self.live_x.value, self.live_x0.value = (png_bytes(zoom(im, z)) for im in run.live)
        if run.frames:
            self.frame.max = self.play.max = len(run.frames) - 1
            if self.frame.value == 0:
                self._show_frame()
        if ended:
            self._finish(run)

    def _finish(self, run):
        self.run_button.disabled, self.stop_button.disabled = False, True
        self.step.max = max(0, len(run.trajectory) - 1)
        self._show_step()
        self._show_frame()
        if run.state == "failed":
            self.status.value = error_html(run.error)
        else:
            hr = f", {len(run.hr)} super-resolved" if run.hr else ""
            took = f" in {run.finished - run.started:.1f} s" if run.started else ""
            self.status.value = note_html(f"{run.state}: {len(run.frames)} of {run.n_frames} frames{hr}{took}")

    # -- viewing and saving ----------------------------------------------------------------------------------------

    def _show_frame(self):
        run = self.current
        if run is None or not run.frames:
            return
        i = min(self.frame.value, len(run.frames) - 1)
        lr = to_uint8(run.frames[i])
        self.view_lr.value = png_bytes(zoom(lr, display_zoom(lr.shape[0])))
        self.view_hr.layout.display = "" if i < len(run.hr) else "none"  # no empty picture beside the frame
        if i < len(run.hr):
            hr = to_uint8(run.hr[i])
            self.view_hr.value = png_bytes(zoom(hr, display_zoom(hr.shape[0])))

    def _show_step(self):
        run = self.current
        if run is None or not run.trajectory:
            return
        x, x0, t = run.trajectory[min(self.step.value, len(run.trajectory) - 1)]
        z = display_zoom(x.shape[0])
        self.traj_x.value, self.traj_x0.value = png_bytes(zoom(x, z)), png_bytes(zoom(x0, z))
        self.step_label.value = f"step {self.step.value + 1}/{len(run.trajectory)}, t = {t}"

    @guarded
    def save(self, out_dir=None, overwrite=None):
        """Write the frames to ``out_dir/frames/`` and ``sequence.gif`` (stage 2: the low-resolution frames to
        ``frames_lr/`` and ``sequence_lr.gif``), as ``gridit sample`` lays them out; returns the folder."""
        run = self.current
        if run is None or not run.frames:
            raise GriditError("nothing to save yet: run the sampler first")
        out = Path(out_dir if out_dir is not None else self.out_dir.value)
        prepare_output_dir(out, self.overwrite.value if overwrite is None else overwrite, SAMPLE_OUTPUTS)
        streams = [(run.hr, {})] if run.hr else []
        streams.append((run.frames, {"frames": "frames_lr", "gif_name": "sequence_lr.gif"} if run.hr else {}))
        for frames, names in streams:
            writer = FrameWriter(out, **names)
            for f in frames:
                writer.add(f)
            writer.close()
        self.status.value = note_html(f"saved {len(run.frames)} frames to {out}")
        return out
