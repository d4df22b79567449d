"""Experiments: what the notebooks call. ``recipes`` (the training configs of the quickstart and the shipped
checkpoints), ``params`` (a notebook's flat parameters, checked in one call), ``quickstart`` (``make demo``'s
experiment), ``runs`` (the experiment notebooks that studies run: train, sample, evaluate) and ``figures``."""
