"""haul: resumable, parallel, verified uploads of very large files over tus 1.0.0."""

__version__ = "0.1.0"
