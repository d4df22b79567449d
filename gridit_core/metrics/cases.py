"""Sequences that are wrong in one known way: what a coherence metric must score far below real data.

Each case starts from real sequences of ``data.builtin.bouncing_shapes`` (their ground-truth start, velocity, radius
and colour) and breaks one thing the generator guarantees in the first ball of every sequence; the other balls keep
their real paths. ``CASES`` maps a case name to its builder; ``broken_sequences(data, name)`` draws the frames. The
first five are the ones that fooled the old score (issue 10): one 5 px teleport, a mid-air reversal, a stop for 45%
of the frames, a 0.3 px/frame drift, and noise under the detection threshold (lengths are for 16 px frames and
scale with the frame). ``DIGIT_CASES`` and ``broken_digits``
do the same for moving digits.
"""

import numpy as np

from gridit_core.data.builtin import reflect_into
from gridit_core.errors import GriditError


def draw_balls(positions, radii, colours, visible, frame_size):
    """uint8 frames ``(T, S, S, 3)``: anti-aliased discs drawn in ball order over black, as the generator draws them.

    ``positions`` ``(T, B, 2)`` as ``(y, x)``; ``radii`` ``(T, B)``; ``colours`` ``(T, B, 3)``; ``visible`` ``(T, B)``.
    """
    centre = np.arange(frame_size) + 0.5  # pixel centres
    img = np.zeros((len(positions), frame_size, frame_size, 3))
    for k in range(positions.shape[1]):
        dy = centre[None, :, None] - positions[:, k, 0, None, None]  # (T, S, 1)
        dx = centre[None, None, :] - positions[:, k, 1, None, None]  # (T, 1, S)
        cover = np.clip(radii[:, k, None, None] - np.hypot(dy, dx) + 0.5, 0, 1) * visible[:, k, None, None]
        img += cover[..., None] * (colours[:, k, None, None, :] - img)  # (T, S, S, 3)
    return np.rint(img).astype(np.uint8)


def bounce(p0, v0, n, lo, hi):
    """``n`` positions ``(n, 2)`` from ``p0`` at velocity ``v0`` with elastic bounces in ``[lo, hi]``, and the velocity
    at the last of them (its sign flipped on each axis that has hit a wall an odd number of times)."""
    u = p0 + v0 * np.arange(n)[:, None]  # (n, 2) unfolded path
    laps = np.floor((u[-1] - lo) / (hi - lo))
    return reflect_into(u, lo, hi), np.where(laps % 2 == 0, v0, -v0)


def _split(ball, t0, then):
    """The real path up to frame ``t0``, then ``then(p, v)`` (a path from the state at ``t0``) for the rest."""
    lo, hi, n = ball["lo"], ball["hi"], len(ball["pos"])
    before, v = bounce(ball["p0"], ball["v0"], t0 + 1, lo, hi)
    ball["pos"] = np.concatenate([before[:t0], then(before[t0], v, n - t0)])[:n]
    return ball


def _central_frame(ball):
    """A frame in the middle half of the sequence where the ball is farthest from every wall."""
    n = len(ball["pos"])
    room = np.minimum(ball["pos"] - ball["lo"], ball["hi"] - ball["pos"]).min(1)  # (T,)
    return n // 4 + int(np.argmax(room[n // 4 : 3 * n // 4]))


def teleport(ball, rng, jump=5 / 16):
    """One jump of ``jump`` frame sides (5 px in 16) mid-sequence, to a point inside the walls, then on at the same
    velocity."""
    jump = jump * ball["size"]

    def then(p, v, n):
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        targets = p + jump * np.stack([np.sin(angles), np.cos(angles)], 1)  # (24, 2)
        room = np.minimum(targets - ball["lo"], ball["hi"] - targets).min(1)
        return bounce(targets[np.argmax(room)], v, n, ball["lo"], ball["hi"])[0]

    return _split(ball, len(ball["pos"]) // 2, then)


def reversal(ball, rng):
    """The velocity reversed once, far from any wall."""
    return _split(ball, _central_frame(ball), lambda p, v, n: bounce(p, -v, n, ball["lo"], ball["hi"])[0])


def stop(ball, rng, fraction=0.45):
    """The ball stands still for ``fraction`` of the frames mid-flight, then goes on as before."""
    n = len(ball["pos"])
    k = round(fraction * n)

    def then(p, v, rest):
        return np.concatenate([np.repeat(p[None], k, 0), bounce(p, v, max(rest - k, 1), ball["lo"], ball["hi"])[0]])

    return _split(ball, (n - k) // 2, then)


def slow(ball, rng, speed=0.3 / 16):
    """Drifts at ``speed`` frame sides per frame (0.3 px in 16) in the ball's own direction."""
    v = ball["v0"] * speed * ball["size"] / np.linalg.norm(ball["v0"])
    ball["pos"] = bounce(ball["p0"], v, len(ball["pos"]), ball["lo"], ball["hi"])[0]
    return ball


def fast(ball, rng, factor=3.0):
    """Moves ``factor`` times as fast as the data."""
    ball["pos"] = bounce(ball["p0"], ball["v0"] * factor, len(ball["pos"]), ball["lo"], ball["hi"])[0]
    return ball


def jitter(ball, rng, std=0.5 / 16):
    """The real path plus Gaussian noise of ``std`` frame sides (0.5 px in 16) on every centre."""
    ball["pos"] = ball["pos"] + rng.normal(0, std * ball["size"], ball["pos"].shape)
    return ball


def wrap(ball, rng):
    """Leaves through one wall and comes back through the opposite one instead of bouncing."""
    u = ball["p0"] + ball["v0"] * np.arange(len(ball["pos"]))[:, None]
    ball["pos"] = ball["lo"] + np.mod(u - ball["lo"], ball["hi"] - ball["lo"])
    return ball


def grow(ball, rng, factor=1.6):
    """The radius grows steadily to ``factor`` times its start (and no more than the frame holds)."""
    end = min(factor * ball["radius"][0], ball["size"] / 2 - 1)
    ball["radius"] = np.linspace(ball["radius"][0], end, len(ball["radius"]))
    return ball


def shrink(ball, rng, factor=0.5):
    """A ball of ``factor`` times the data's radius all along."""
    ball["radius"] = ball["radius"] * factor
    return ball


def recolour(ball, rng):
    """Switches to the complementary colour halfway."""
    half = len(ball["colour"]) // 2
    ball["colour"][half:] = 255 - ball["colour"][half:]
    return ball


def wrong_colour(ball, rng):
    """White all along (no built-in ball is white)."""
    ball["colour"][:] = 255
    return ball


def vanish(ball, rng, frames=4):
    """Disappears in mid-air for ``frames`` frames."""
    t0 = _central_frame(ball)
    ball["visible"][t0 : t0 + frames] = 0
    return ball


def extra_ball(ball, rng):
    """A second ball of the same size and colour, on a path of its own."""
    v = ball["v0"][::-1] * np.array([1.0, -1.0])  # the same speed, at right angles
    p0 = ball["lo"] + ball["hi"] - ball["p0"]  # the mirror image of the start
    ball["twin"] = bounce(p0, v, len(ball["pos"]), ball["lo"], ball["hi"])[0]
    return ball


def noise(frames, rng, below=40):
    """Real frames with uniform noise under ``below`` (the detection threshold) on every channel of every pixel."""
    return np.maximum(frames, rng.integers(0, below, frames.shape, dtype=np.uint8))


CASES = {  # name -> what breaks the first ball of each sequence (or, for "noise", the frames)
    "teleport": teleport, "reversal": reversal, "stop": stop, "slow": slow, "noise": noise,
    "fast": fast, "jitter": jitter, "wrap": wrap, "grow": grow, "shrink": shrink, "recolour": recolour,
    "wrong colour": wrong_colour, "vanish": vanish, "extra ball": extra_ball,
}  # fmt: skip


def broken_sequences(data, name, seed=0):
    """uint8 ``(N, T, S, S, 3)``: the sequences of ``data`` (a ``BouncingData``) with case ``name`` applied."""
    if name not in CASES:
        raise GriditError(f"unknown case {name!r}; choose one of {', '.join(CASES)}")
    rng = np.random.default_rng(seed)
    if name == "noise":
        return noise(data.frames, rng)
    n, t, size = data.frames.shape[:3]
    out = []
    for i in range(n):
        pos, radii = data.positions[i].copy(), np.repeat(data.radii[i][None], t, 0)  # (T, B, 2), (T, B)
        colours = np.repeat(data.colours[i][None].astype(float), t, 0)  # (T, B, 3)
        visible = np.ones((t, pos.shape[1]))
        r = data.radii[i, 0]
        ball = {"pos": pos[:, 0], "p0": pos[0, 0], "v0": data.velocities[i, 0], "lo": r, "hi": size - r, "size": size,
                "radius": radii[:, 0].copy(), "colour": colours[:, 0].copy(), "visible": visible[:, 0].copy()}
        ball = CASES[name](ball, rng)
        pos[:, 0], radii[:, 0], colours[:, 0], visible[:, 0] = ball["pos"], ball["radius"], ball["colour"], ball["visible"]
        if "twin" in ball:
            pos, radii, colours, visible = (np.concatenate([a, a[:, :1]], 1) for a in (pos, radii, colours, visible))
            pos[:, -1] = ball["twin"]
        out.append(draw_balls(pos, radii, colours, visible, size))
    return np.stack(out)


def _box(frame):
    """The bounding box ``(y0, y1, x0, x1)`` of a frame's bright pixels (the digit)."""
    mask = frame.max(-1) > 40
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return ys[0], ys[-1] + 1, xs[0], xs[-1] + 1


def digit_swap(frames, other):
    """From halfway, the digit of ``other`` (another sequence) drawn where this sequence's digit is."""
    y0, y1, x0, x1 = _box(other[0])
    glyph = other[0, y0:y1, x0:x1]
    out = frames.copy()
    for t in range(len(frames) // 2, len(frames)):
        top, _, left, _ = _box(frames[t])
        out[t] = 0
        h, w = min(glyph.shape[0], frames.shape[1] - top), min(glyph.shape[1], frames.shape[2] - left)
        out[t, top : top + h, left : left + w] = glyph[:h, :w]
    return out


DIGIT_CASES = {  # name -> (frames (T, H, W, 3), another sequence) -> frames: real frames reordered, or changed
    "reversal": lambda f, o: np.concatenate([f[: len(f) // 2 + 1], f[len(f) // 2 - 1 :: -1]])[: len(f)],
    "stop": lambda f, o: np.concatenate([f[:8], np.repeat(f[8:9], round(0.45 * len(f)), 0), f[9:]])[: len(f)],
    "teleport": lambda f, o: np.concatenate([f[: len(f) // 2], f[len(f) // 2 + 8 :]]),  # 8 frames skipped
    "swap": digit_swap,
    "noise": lambda f, o: noise(f, np.random.default_rng(0)),
}  # fmt: skip


def broken_digits(frames, name):
    """A list of uint8 ``(T, H, W, 3)``: moving-digit sequences with case ``name`` applied (``swap`` takes each
    sequence's new digit from the next sequence showing another one)."""
    if name not in DIGIT_CASES:
        raise GriditError(f"unknown digit case {name!r}; choose one of {', '.join(DIGIT_CASES)}")
    out = []
    for i, f in enumerate(frames):
        others = [g for g in np.roll(frames, -i - 1, axis=0) if not np.array_equal(_glyph(g), _glyph(f))]
        out.append(DIGIT_CASES[name](f, others[0] if others else f))
    return out


def _glyph(frames):
    y0, y1, x0, x1 = _box(frames[0])
    return frames[0, y0:y1, x0:x1]


def score_cases(data, reference, names=None):
    """``{name: set score}`` of ``data`` (a ``BouncingData``) as it is (``real``), shuffled, frozen, and broken by
    each case in ``names`` (default all), scored by ``metrics.coherence.coherence_many`` against ``reference``."""
    from gridit_core.metrics.coherence import coherence_many, freeze_frames, shuffle_frames

    sets = {"real": data.frames, "shuffled": [shuffle_frames(f, i) for i, f in enumerate(data.frames)],
            "frozen": [freeze_frames(f) for f in data.frames]}  # fmt: skip
    sets |= {name: broken_sequences(data, name) for name in names or CASES}
    return {name: coherence_many(x, reference)["score"] for name, x in sets.items()}
