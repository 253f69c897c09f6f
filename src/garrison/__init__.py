"""garrison: a text-to-video service that holds its power line and shares its fleet with training."""

__version__ = "0.1.0"
