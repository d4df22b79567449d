"""The one exception type that user-facing code raises for bad input."""


class GriditError(ValueError):
    """Bad input or state that the user can fix; the CLI prints it on one line and exits non-zero."""
