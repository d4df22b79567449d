"""One registry of families: each builds its models by size name, rebuilds them from their saved config, and says
what its sampler uses and what it can do; callers ask it instead of comparing names."""

import dataclasses

import pytest
import torch

from gridit_core.diffusion import Diffusion, DiffusionConfig
from gridit_core.errors import GriditError
from gridit_core.models import DiT, VideoDiT
from gridit_core.sampling import FAMILIES, SampleConfig, family_of, generate_frames, get_family

pytestmark = pytest.mark.unit

TINY = dict(input_size=16, rows=2, cols=2, depth=1, hidden_size=32, num_heads=2, in_channels=3)
CLIP = dict(frame_size=8, frames=4, depth=1, hidden_size=32, num_heads=4, in_channels=3)


def test_grid_is_the_registered_family_and_rebuilds_from_its_config():
    assert list(FAMILIES) == ["grid", "tensor", "msc"]
    assert [f.model_class for f in FAMILIES.values()] == [DiT, VideoDiT, VideoDiT]
    model = FAMILIES["grid"].build("DiT-N/4", **TINY)
    again = FAMILIES["grid"].from_config(dataclasses.asdict(model.config))
    assert again.config == model.config and family_of(model) is FAMILIES["grid"]
    assert set(again.state_dict()) == set(model.state_dict())
    assert "frame_index" not in model.state_dict()  # a derived buffer, not saved: old checkpoints load as they were
    assert torch.equal(model.frame_index, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]))


@pytest.mark.parametrize("name", ["tensor", "msc"])
def test_sequence_families_build_their_own_model(name):
    model = FAMILIES[name].build("DiT-N/4", **CLIP)
    assert family_of(model).name == name and model.config.causal == FAMILIES[name].causal
    assert FAMILIES[name].from_config(dataclasses.asdict(model.config)).config == model.config


def test_unknown_families_and_fields_are_refused():
    with pytest.raises(GriditError, match="unknown architecture 'lstm'; choose one of grid, tensor, msc"):
        get_family("lstm")
    msc = FAMILIES["msc"].build("DiT-N/4", frame_size=16, frames=4, depth=1, hidden_size=32, num_heads=4)
    with pytest.raises(GriditError, match="a msc model config loaded as tensor"):
        FAMILIES["tensor"].from_config(dataclasses.asdict(msc.config))
    with pytest.raises(GriditError, match=r"a grid model config has no fields \['arch', 'attention', 'frame_size', 'frames'"):
        FAMILIES["grid"].from_config(dataclasses.asdict(msc.config))
    with pytest.raises(GriditError, match=r"a grid model config has no fields \['window'\]"):
        FAMILIES["grid"].from_config({**TINY, "window": 3})


def test_each_family_uses_its_own_sampling_fields_and_every_field_has_a_user():
    every = set(SampleConfig.names())
    assert set().union(*(f.sample_fields for f in FAMILIES.values())) == every
    assert {"resample", "overlap"} <= set(FAMILIES["tensor"].sample_fields)
    assert "schedule" in FAMILIES["msc"].sample_fields and "schedule" not in FAMILIES["grid"].sample_fields
    assert SampleConfig(steps=3).pick(("steps", "sampler")) == {"steps": 3, "sampler": "ddim"}


def test_every_family_reports_progress_with_the_same_keys():
    diffusion = Diffusion(DiffusionConfig(num_steps=50))
    keys = {}
    models = {"grid": FAMILIES["grid"].build("DiT-N/4", **{**TINY, "learn_sigma": False}),
              **{n: FAMILIES[n].build("DiT-N/4", **CLIP) for n in ("tensor", "msc")}}  # fmt: skip
    for name, model in models.items():
        seen = []
        list(generate_frames(model.eval(), diffusion, 6, steps=2, progress=False, callback=seen.append))
        keys[name] = {frozenset(info) for info in seen}
        first, stop = seen[-1]["frames"]
        assert 0 <= first < stop <= 6 + model.config.frames  # the frames that call worked on
        assert seen[-1]["unit"] == seen[-1]["units"] - 1  # the last unit reports last
    assert all(k == {frozenset({"i", "steps", "t", "x", "x0_pred", "unit", "units", "frames"})} for k in keys.values())


def test_a_family_follows_its_own_unit_in_a_trajectory():
    grid, msc = FAMILIES["grid"], FAMILIES["msc"]
    assert grid.traces({"unit": 2, "frames": (0, 4)}, 2) and not grid.traces({"unit": 1, "frames": (2, 6)}, 2)
    assert msc.traces({"unit": 0, "frames": (3, 5)}, 4) and not msc.traces({"unit": 0, "frames": (3, 5)}, 5)
    assert (grid.traced, FAMILIES["tensor"].traced, msc.traced) == ("grid", "window", "frame")


def test_seams_are_where_each_unit_starts_adding_frames():
    diffusion = Diffusion(DiffusionConfig(num_steps=50))
    tensor = FAMILIES["tensor"].build("DiT-N/4", **CLIP).eval()  # clips of 4 frames, overlap 2 by default
    starts = set()
    list(generate_frames(tensor, diffusion, 11, steps=1, progress=False, callback=lambda i: starts.add(i["frames"][0])))
    new = sorted(first + 2 for first in starts if first > 0)  # each later window's first new frame
    assert FAMILIES["tensor"].seams(tensor, 11) == new == [4, 6, 8, 10]
    msc = FAMILIES["msc"].build("DiT-N/4", **CLIP)
    assert FAMILIES["msc"].seams(msc, 11) == []  # one causal rollout: nothing is stitched
