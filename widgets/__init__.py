"""Interactive front-ends on ``gridit_core`` (which never imports this package): ``SequenceSampler`` samples a
sequence with live previews, ``AttentionInspector`` shows attention across frames. See widgets/README.md."""

from widgets.inspector import AttentionInspector
from widgets.sampler import SequenceSampler

__all__ = ["AttentionInspector", "SequenceSampler"]
