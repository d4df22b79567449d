"""AttentionInspector: what a model attends to across frames. Controls on the left of each view, the work in
``widgets.attention.AttentionState``; a view is recomputed only when a control it depends on changes."""

import ipywidgets as W
import plotly.graph_objects as go

from gridit_core.errors import GriditError
from widgets.attention import BRANCHES, FUSIONS, VIEWS, AttentionState
from widgets.common import guarded, load_stage1, note_html
from widgets.patchview import PatchView

BRANCH_LABELS = {"both": "both branches", "high": "High-Res", "low": "Low-Res"}


class AttentionInspector(W.VBox):
    """Attention across frames of ``model_or_ckpt`` (a checkpoint path or a model object) on ``sequence`` (frames
    ``(T, 3, H, W)`` in [-1, 1], uint8 frames, or a SequenceSampler after a run); see widgets/README.md."""

    def __init__(self, model_or_ckpt, sequence=None, *, diffusion=None, t=None, layer=None, device="cpu"):
        self.state = None
        self.status = W.HTML()
        self.layer = W.IntSlider(min=0, max=0, description="layer", continuous_update=False)
        self.t = W.IntSlider(min=0, max=999, description="noise t", continuous_update=False)
        self.start = W.IntSlider(min=0, max=0, description="first frame", continuous_update=False)
        self.view = W.ToggleButtons(options=VIEWS, description="view")
        self.mode = W.ToggleButtons(options=FUSIONS, description="heads")
        self.branch = W.ToggleButtons(options=[(BRANCH_LABELS[b], b) for b in BRANCHES], description="branch")
        self.head_boxes = W.HBox()
        self.matrix = go.FigureWidget(
            go.Heatmap(z=[[0]], colorscale="Viridis", zmin=0,
                       hovertemplate="query frame %{y} -> key frame %{x}: %{z:.3f}<extra></extra>"),
            layout=dict(width=380, height=340, margin=dict(l=50, r=10, t=30, b=40), title="attention mass, frame x frame",
                        xaxis=dict(title="key frame", dtick=1), yaxis=dict(title="query frame", autorange="reversed", dtick=1)),
        )  # fmt: skip
        self.patches = PatchView()
        self.token_label = W.Label()
        self.gate_plot = go.FigureWidget(layout=dict(width=420, height=300, margin=dict(l=50, r=10, t=30, b=40),
                                                     title="High-Res gate by noise level (Low-Res = 2 - it)",
                                                     xaxis=dict(title="noise level t"), yaxis=dict(title="weight")))  # fmt: skip
        self.gate_box = W.Box([self.gate_plot])
        self.snap_path = W.Text(value="reports/widgets/attention", description="snapshot")
        self.snap_button = W.Button(description="Save PNG + HTML", icon="camera")
        self._quiet = False  # set while controls are being filled in, so they do not each trigger a redraw
        for control in (self.layer, self.t, self.start, self.view, self.mode, self.branch):
            control.observe(self._changed, "value")
        self.patches.observe(self._clicked, "click")
        self.snap_button.on_click(lambda _: self.snapshot(self.snap_path.value))
        super().__init__([
            self.status,
            W.HBox([W.VBox([self.layer, self.t, self.start]), W.VBox([self.view, self.mode, self.branch])]),
            self.head_boxes,
            W.HBox([self.matrix, W.VBox([W.HTML("<b>click a patch: its attention over every frame</b>"),
                                         self.patches, self.token_label])]),
            self.gate_box,
            W.HBox([self.snap_path, self.snap_button]),
        ])  # fmt: skip
        self.add_class("gridit-inspector")
        self.status.add_class("gridit-status")
        self._open(model_or_ckpt, sequence, diffusion, t, layer, device)

    @guarded
    def _open(self, source, sequence, diffusion, t, layer, device):
        loaded = load_stage1(source, diffusion, device=device)
        if sequence is None:
            raise GriditError("give a sequence: frames (T, 3, H, W), uint8 frames, or a SequenceSampler after a run")
        self.state = AttentionState(loaded, sequence, t=t, layer=layer)
        self._fill_controls()
        self.redraw()

    def _fill_controls(self):
        s, ld = self.state, self.state.loaded
        self._quiet = True
        self.layer.max, self.layer.value = s.depth - 1, s.layer
        self.t.max, self.t.value = ld.diffusion.num_steps - 1, s.t
        self.start.max, self.start.value = s.max_start, s.start
        self.start.layout.display = "" if s.max_start > 0 else "none"
        msc = ld.family.causal  # two branches and their gate
        self.branch.layout.display = self.gate_box.layout.display = "" if msc else "none"
        branch_of = ld.model.blocks[0].attn.high_heads if msc else None
        boxes = []
        for h in range(s.heads):
            label = f"head {h}" + ((" (High-Res)" if h < branch_of else " (Low-Res)") if msc else "")
            box = W.Checkbox(value=h in s.checked, description=label, indent=False, layout=W.Layout(width="150px"))
            box.observe(self._changed, "value")
            boxes.append(box)
        self.head_boxes.children = boxes
        if msc:
            levels, weights = s.gates()
            with self.gate_plot.batch_update():
                self.gate_plot.data = []
                for i, wl in enumerate(weights):
                    self.gate_plot.add_scatter(x=levels.tolist(), y=wl[:, 0].tolist(), mode="lines", name=f"layer {i}")
        self._quiet = False

    def set_sequence(self, sequence):
        """Inspect another sequence (a wrong frame size shows in red and keeps the current one)."""
        self._set_sequence(sequence)

    @guarded
    def _set_sequence(self, sequence):
        if self.state is None:
            raise GriditError("no model loaded")
        self.state.set_sequence(sequence)
        self._fill_controls()
        self.redraw()

    # -- reacting --------------------------------------------------------------------------------------------------

    def _changed(self, _):
        if self._quiet or self.state is None:
            return
        s = self.state
        s.layer, s.t, s.start = self.layer.value, self.t.value, self.start.value
        s.view, s.mode, s.branch = self.view.value, self.mode.value, self.branch.value
        s.checked = {h for h, box in enumerate(self.head_boxes.children) if box.value}
        self.redraw()

    def _clicked(self, change):
        if self.state is None:
            return
        x, y, _ = change["new"]
        if self.state.pick(x, y) is not None:
            self.redraw(matrix=False)

    def click(self, frame, y, x):
        """Choose token ``(frame, y, x)`` (in tokens), as a click on its patch does."""
        if self.state is None:
            return
        self.state.token = (int(frame), int(y), int(x))
        self.redraw(matrix=False)

    @guarded
    def redraw(self, matrix=True):
        """Recompute and show what the controls ask for; the matrix is left alone when only the token changed."""
        s = self.state
        if s is None:
            return
        if s.loaded.family.causal:
            self.gate_plot.layout.shapes = [dict(type="line", x0=s.t, x1=s.t, y0=0, y1=2, line=dict(color="black", width=1))]
        if matrix:
            fm = s.frame_matrix().numpy()
            with self.matrix.batch_update():
                self.matrix.data[0].z = fm.tolist()
                self.matrix.data[0].x = self.matrix.data[0].y = list(range(s.start, s.start + len(fm)))
        self.patches.show(s.picture_png())
        f, y, x = s.token
        self.token_label.value = f"token: frame {s.start + f}, patch row {y}, column {x}"
        self.status.value = note_html(s.describe())

    def frame_matrix(self):
        """The frame x frame matrix shown ``(T, T)`` (a tensor), or None without a model and sequence."""
        return self.state.frame_matrix() if self.state is not None else None

    @guarded
    def snapshot(self, path):
        """Write the current view as PNG and self-contained HTML (``path.png``, ``path.html``); returns both paths."""
        if self.state is None:
            raise GriditError("nothing to snapshot: no model and sequence")
        paths = self.state.snapshot(path)
        self.status.value = note_html(f"wrote {paths[0]} and {paths[1]}")
        return paths

