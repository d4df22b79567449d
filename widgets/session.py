"""One sampling run, off the UI thread: what the SequenceSampler's Run button starts, with no widget in it.

The frames come from ``gridit_core.sampling.grids.generate_frames``, the function ``gridit sample`` streams to disk, with
the same settings and seed, so the run gives the frames the command writes. A stage-2 model, if given, then
super-resolves them as ``sampling.two_stage.sample_two_stage`` does (8-bit frames, batches seeded with ``batch_seed``). The
model is wrapped so that once ``stop()`` is asked its next call raises: a run ends within one model call and keeps
the frames already final.
"""

import threading
import time

import torch

from gridit_core.sampling import SampleConfig, generate_frames
from gridit_core.sampling.two_stage import batch_seed
from gridit_core.sampling.upscale import SAMPLE_AUG, check_upscale_settings, upscale_frames
from gridit_core.util.image import tensor_to_uint8, uint8_to_tensor
from widgets.common import tile, to_uint8


class Stopped(Exception):
    """Raised inside the sampler when a stop was asked."""


class Stoppable:
    """A model as the samplers call it, refusing to run once ``event`` is set; every attribute is the model's."""

    def __init__(self, model, event):
        self._model, self._event = model, event

    def __call__(self, *args, **kwargs):
        if self._event.is_set():
            raise Stopped
        return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


def preview(x):
    """A sample as the sampler holds it -> one uint8 picture: a grid image as it is, a clip's frames side by side."""
    x = x[0]  # the first sequence
    if x.ndim == 3:  # (C, GH, GW)
        return to_uint8(x)
    return tile(to_uint8(x), cols=x.shape[0], gap=1)  # (F, C, H, W) -> (H, F*W + gaps, 3)


class SamplingRun:
    """Sample one sequence of ``n_frames`` from ``loaded`` (``widgets.common.Loaded``) with ``settings`` (a
    ``SampleConfig``); ``start()`` runs it in a thread, ``run()`` in the caller's.

    While it runs: ``progress`` (unit, units, step, steps: grids, windows or the rollout's iterations), ``live``
    (x_t and predicted x0 as pictures, every ``every`` steps), ``trajectory`` (x_t and x0 of unit ``trace`` at every
    step), ``frames`` (final frames so far, ``(3, H, W)`` tensors in [-1, 1]). ``on_update(run)`` is called from the
    sampling thread after each kept step and each frame. ``sr`` is ``(model, diffusion, cfg, codec)`` of a stage-2
    checkpoint; ``sr_opts`` its settings (``aug_level``, ``steps``, ``sampler``, ``eta``, ``batch``).
    """

    def __init__(self, loaded, n_frames, settings=None, *, seed=0, trace=0, every=1, sr=None, sr_opts=None,
                 on_update=None):  # fmt: skip
        self.loaded, self.n_frames, self.seed = loaded, int(n_frames), int(seed)
        self.settings = settings if settings is not None else SampleConfig(**loaded.sampling)
        self.trace, self.every = int(trace), max(1, int(every))
        self.sr, self.on_update = sr, on_update
        self.sr_opts = {"aug_level": SAMPLE_AUG, "steps": 50, "sampler": "ddim", "eta": 0.0, "batch": 16, **(sr_opts or {})}
        self.frames, self.hr, self.trajectory = [], [], []
        self.live, self.error, self.state = None, None, "ready"
        self.progress = {"stage": 1, "unit": 0, "units": 1, "step": 0, "steps": 1}
        self.started = self.finished = None
        self._event = threading.Event()
        self._thread = None
        self._frames = self._check()

    def _check(self):
        """Every setting checked now, in the caller's thread: the frame iterator, nothing sampled yet."""
        ld = self.loaded
        if self.sr is not None:
            sr_model, sr_diffusion, sr_cfg, sr_codec = self.sr
            o = self.sr_opts
            check_upscale_settings(sr_model, sr_diffusion, sr_cfg.scale, batch_size=o["batch"], aug_level=o["aug_level"],
                                   steps=o["steps"], sampler=o["sampler"], eta=o["eta"], codec=sr_codec)  # fmt: skip
        model = Stoppable(ld.model, self._event)
        return generate_frames(model, ld.diffusion, self.n_frames, self.settings, rows=ld.rows, cols=ld.cols,
                               seed=self.seed, device=ld.device, progress=False, callback=self._on_step,
                               codec=ld.codec)  # fmt: skip

    # -- running ---------------------------------------------------------------------------------------------------

    def start(self):
        """Run in a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self.run, name="gridit-sampling", daemon=True)
        self._thread.start()
        return self

    def run(self):
        """Sample (then super-resolve) in this thread; the state ends as done, stopped or failed, never raised."""
        self.state, self.started = "running", time.perf_counter()
        try:
            for frame in self._frames:
                self.frames.append(frame[0].cpu())
                self._notify()
            if self.sr is not None:
                self._upscale()
            self.state = "done"
        except Stopped:
            self.state = "stopped"
        except Exception as e:  # shown by the widget as one line; the notebook keeps running
            self.state, self.error = "failed", e
        finally:
            self.finished = time.perf_counter()
            self._notify()
        return self

    def stop(self):
        """Ask the run to end; the next model call raises inside the sampler."""
        self._event.set()

    def wait(self, timeout=None):
        """Wait for a started run to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state not in ("ready", "running")

    @property
    def running(self):
        return self.state == "running"

    # -- what the sampler reports ----------------------------------------------------------------------------------

    def _on_step(self, info):
        self.progress = {"stage": 1, "unit": info["unit"], "units": info["units"], "step": info["i"] + 1,
                         "steps": info["steps"]}  # fmt: skip
        traced = self.loaded.family.traces(info, self.trace)
        kept = info["i"] % self.every == 0 or info["i"] == info["steps"] - 1
        if traced or kept:
            pictures = (preview(info["x"]), preview(info["x0_pred"]))
            if traced:
                self.trajectory.append((*pictures, int(info["t"].flatten()[0]) if torch.is_tensor(info["t"]) else int(info["t"])))
            if kept:
                self.live = pictures
                self._notify()

    def _upscale(self):
        """Stage 2 on the 8-bit frames, in seeded batches, as ``sampling.two_stage.sample_two_stage`` does."""
        sr_model, sr_diffusion, sr_cfg, sr_codec = self.sr
        o = self.sr_opts
        low = uint8_to_tensor(tensor_to_uint8(torch.stack(self.frames)))  # (T, 3, h, w) as written to PNG
        batches = list(torch.split(low, o["batch"]))
        for b, lr in enumerate(batches):
            def on_step(info, b=b):
                self.progress = {"stage": 2, "unit": b, "units": len(batches), "step": info["i"] + 1, "steps": info["steps"]}
                if info["i"] % self.every == 0:
                    self.live = (preview(info["x"]), preview(info["x0_pred"]))
                    self._notify()

            hr = upscale_frames(Stoppable(sr_model, self._event), sr_diffusion, lr, scale=sr_cfg.scale,
                                residual=sr_cfg.residual, codec=sr_codec, aug_level=o["aug_level"], sampler=o["sampler"],
                                steps=o["steps"], eta=o["eta"], seed=batch_seed(self.seed, b), batch_size=len(lr),
                                callback=on_step)  # fmt: skip
            self.hr.extend(hr.cpu())
            self._notify()

    def _notify(self):
        if self.on_update is not None:
            self.on_update(self)

    # -- results ---------------------------------------------------------------------------------------------------

    def result(self):
        """The frames made so far, ``(T, 3, H, W)`` in [-1, 1] (None before the first)."""
        return torch.stack(self.frames) if self.frames else None

    def result_hr(self):
        return torch.stack(self.hr) if self.hr else None
