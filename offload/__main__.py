"""`python -m offload` runs the CLI, through a warm server when one answers (see `offload.cli.main`)."""

from offload.cli.main import main

main()
