"""What lives on a worker: its workspace layout, its container, and the shell that runs there.

A leaf package: infra, providers, runtime and jobs all use it, and it imports nothing of theirs.
"""
