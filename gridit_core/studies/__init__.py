"""Studies: parameterised notebook runs and their reports. ``spec`` reads a study spec and expands it into runs,
``runner`` runs them (local processes or a submitit job array) and ``report`` writes the offline HTML report and the
aggregates. The notebooks they run call ``experiments.runs``."""
