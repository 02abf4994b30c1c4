"""`python -m offload` runs the CLI, through a warm server when one answers (see `offload.cli.warm`)."""

from offload.cli.warm import main

main()
