"""offload: run heavy development work on private, per-developer workers."""

__version__ = "0.1.0"
