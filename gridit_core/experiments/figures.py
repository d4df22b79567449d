"""Figures the experiment notebooks and the quickstart share."""

from pathlib import Path

from gridit_core.training import read_metrics


def loss_figure(metrics_path, init=""):
    """The training loss of a run (``metrics.jsonl``); after a shipped checkpoint's own training log
    (``training_metrics.jsonl`` beside it) when the run starts from one."""
    import matplotlib.pyplot as plt

    log = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 3))
    offset = 0
    before = Path(init).with_name("training_metrics.jsonl") if init else None
    if before is not None and before.is_file():
        shipped = read_metrics(before)
        offset = shipped[-1]["step"]
        ax.plot([m["step"] for m in shipped], [m["loss"] for m in shipped], label=f"shipped checkpoint ({offset} steps)")
    ax.plot([offset + m["step"] for m in log], [m["loss"] for m in log], label="this run")
    ax.set(xlabel="optimizer step", ylabel="training loss", yscale="log", title="Training loss")
    ax.legend()
    return fig
