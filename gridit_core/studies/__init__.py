"""Studies: parameterised notebook runs and their reports. ``spec`` reads a study spec and expands it into runs,
``runner`` runs them (local processes or a submitit job array), ``report`` writes the offline HTML report and the
aggregates, and ``experiment`` is the library of the experiment notebooks (train, sample, evaluate)."""
