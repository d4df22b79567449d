"""One registry of architectures: models are built by name and rebuilt from their saved config."""

import dataclasses

import pytest
import torch

from gridit_core.errors import GriditError
from gridit_core.models import ARCHITECTURES, DiT, VideoDiT, build_model, model_from_config

pytestmark = pytest.mark.unit

TINY = dict(input_size=16, rows=2, cols=2, depth=1, hidden_size=32, num_heads=2, in_channels=3)


def test_grid_is_the_registered_architecture_and_rebuilds_from_its_config():
    assert ARCHITECTURES == {"grid": DiT, "tensor": VideoDiT, "msc": VideoDiT}
    model = build_model("DiT-N/4", **TINY)
    again = model_from_config("grid", dataclasses.asdict(model.config))
    assert again.config == model.config and model.arch == "grid"
    assert set(again.state_dict()) == set(model.state_dict())
    assert "frame_index" not in model.state_dict()  # a derived buffer, not saved: old checkpoints load as they were
    assert torch.equal(model.frame_index, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]))


def test_unknown_architectures_and_fields_are_refused():
    with pytest.raises(GriditError, match="unknown architecture 'lstm'; choose one of: grid, tensor, msc"):
        build_model("DiT-N/4", arch="lstm", **TINY)
    msc = build_model("DiT-N/4", arch="msc", frame_size=16, frames=4, depth=1, hidden_size=32, num_heads=4)
    with pytest.raises(GriditError, match="a msc model config loaded as tensor"):
        model_from_config("tensor", dataclasses.asdict(msc.config))
    with pytest.raises(GriditError, match=r"a grid model config has no fields \['arch', 'attention', 'frame_size', 'frames'"):
        model_from_config("grid", dataclasses.asdict(msc.config))
    with pytest.raises(GriditError, match=r"a grid model config has no fields \['window'\]"):
        model_from_config("grid", {**TINY, "window": 3})
