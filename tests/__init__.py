"""The offload test suite; `tests.workers` holds the real workers the fixtures start."""
