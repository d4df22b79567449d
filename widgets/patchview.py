"""PatchView: a picture drawn in Python that reports where it was clicked, in the picture's own pixels.

An anywidget with its JavaScript inline (nothing is fetched from a network): Python sets ``png`` (base64), the
browser shows it and, on a click, sets ``click`` to ``[x, y, count]``; ``count`` grows by one per click, so a
second click on the same pixel is a change too.
"""

import base64

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  const img = document.createElement("img");
  img.className = "gridit-patch-view";
  img.style.imageRendering = "pixelated";
  img.style.cursor = "crosshair";
  img.style.maxWidth = "100%";
  const show = () => {
    const data = model.get("png");
    img.src = data ? "data:image/png;base64," + data : "";
  };
  img.addEventListener("click", (event) => {
    const box = img.getBoundingClientRect();
    if (!box.width || !box.height) return;
    const x = Math.floor((event.clientX - box.left) * img.naturalWidth / box.width);
    const y = Math.floor((event.clientY - box.top) * img.naturalHeight / box.height);
    const count = (model.get("click")[2] || 0) + 1;
    model.set("click", [x, y, count]);
    model.save_changes();
  });
  model.on("change:png", show);
  show();
  el.appendChild(img);
}
export default { render };
"""


class PatchView(anywidget.AnyWidget):
    """A clickable picture; ``show(png_bytes)`` replaces it, ``click`` is ``[x, y, count]`` in picture pixels."""

    _esm = _ESM
    png = traitlets.Unicode("").tag(sync=True)
    click = traitlets.List([0, 0, 0]).tag(sync=True)

    def show(self, data):
        self.png = base64.b64encode(data).decode()

    def press(self, x, y):
        """What a click at picture pixel ``(x, y)`` sends (for tests and scripts)."""
        self.click = [int(x), int(y), self.click[2] + 1]
