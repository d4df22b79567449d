"""Known-region conditioning beyond RePaint's replacement: clean context (known cells at their own level, with their
own timestep) and reconstruction guidance (Video Diffusion Models)."""

import pytest
import torch

from gridit_core.diffusion import Diffusion, DiffusionConfig, Stepper, run_stepper
from gridit_core.errors import GriditError

pytestmark = pytest.mark.unit

SHAPE = (2, 4, 3, 4, 4)  # clips: 4 frames, the first two known


class Recorder(torch.nn.Module):
    """An x0-predicting model that mixes every frame into every other (so known frames inform unknown ones) and keeps
    the timesteps it was called with."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Parameter(torch.full((4, 4), 0.2) + 0.2 * torch.eye(4))
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(t.clone() if torch.is_tensor(t) else t)
        return torch.einsum("gf,nfchw->ngchw", self.mix, x).tanh()


def setup():
    torch.manual_seed(0)
    known = torch.rand(SHAPE) * 2 - 1
    mask = torch.zeros(1, 4, 1, 1, 1, dtype=torch.bool)
    mask[:, :2] = True
    return Diffusion(DiffusionConfig(num_steps=50, prediction="x0")), known, mask


def run(diffusion, known, mask, seed=0, **kw):
    stepper = Stepper(diffusion, "ddpm", 5, generator=torch.Generator().manual_seed(seed))
    model = Recorder()
    return run_stepper(stepper, model, SHAPE, known=known, known_mask=mask, **kw), model


def test_clean_context_returns_the_known_cells_and_tells_the_model_their_level():
    diffusion, known, mask = setup()
    context = torch.tensor([True, True, False, False])
    out, model = run(diffusion, known, mask, context=context, context_t=3)
    assert torch.equal(out[:, :2], known[:, :2])  # known cells exactly
    steps = Stepper(diffusion, "ddpm", 5).timesteps
    assert [t.tolist() for t in model.seen] == [[[3, 3, s, s]] * 2 for s in steps]  # per frame: context level, step
    clean, model = run(diffusion, known, mask, context=context)
    assert all((t[:, :2] == 0).all() and (t[:, 2:] > 0).any() for t in model.seen[:-1])  # level 0: clean cells
    replaced, model = run(diffusion, known, mask)
    assert [t.tolist() for t in model.seen] == [[s, s] for s in steps]  # replacement: one timestep a sample
    assert not torch.equal(replaced[:, 2:], clean[:, 2:])


def test_reconstruction_guidance_moves_the_unknown_cells_only():
    diffusion, known, mask = setup()
    plain, _ = run(diffusion, known, mask)
    guided, _ = run(diffusion, known, mask, reconstruction=5.0)
    assert torch.equal(guided[:, :2], known[:, :2]) and torch.equal(plain[:, :2], known[:, :2])
    assert (guided[:, 2:] - plain[:, 2:]).abs().max() > 1e-3  # the unknown frames moved
    zero, _ = run(diffusion, known, mask, reconstruction=0.0)
    assert torch.equal(zero, plain)  # weight 0 is no guidance
    both, _ = run(diffusion, known, mask, reconstruction=5.0, context=torch.tensor([True, True, False, False]))
    assert torch.equal(both[:, :2], known[:, :2])


def test_guidance_pulls_the_prediction_of_the_known_cells_towards_them():
    diffusion, known, mask = setup()
    stepper = Stepper(diffusion, "ddpm", 5)
    model, x = Recorder(), torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    t = stepper.timesteps[1]
    from gridit_core.diffusion.samplers import _reconstruction

    out, shift = _reconstruction(stepper, model, x, t, t, known, mask.expand(SHAPE), 1.0, {})
    assert torch.equal(shift[:, :2], torch.zeros_like(shift[:, :2])) and shift[:, 2:].abs().max() > 0
    # a small step of x_t against the gradient (the direction of the shift) lowers the known cells' error
    x0 = stepper.predict(out, t, x)[0]
    moved = stepper.predict(model(x + 0.01 * shift, t), t, x + 0.01 * shift)[0]
    assert ((moved - known)[:, :2] ** 2).sum() < ((x0 - known)[:, :2] ** 2).sum()


def test_conditioning_needs_known_values():
    diffusion, _, _ = setup()
    stepper = Stepper(diffusion, "ddim", 2)
    with pytest.raises(GriditError, match="need known values"):
        run_stepper(stepper, Recorder(), SHAPE, context=torch.ones(4, dtype=torch.bool))
    with pytest.raises(GriditError, match="need known values"):
        run_stepper(stepper, Recorder(), SHAPE, reconstruction=1.0)
