"""Small helpers every stage shares, each written once: random draws (``rng``), files (``io``), images (``image``)
and the device and precision choice (``device``)."""
