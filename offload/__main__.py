"""`python -m offload` runs the CLI."""

from offload.cli.app import main

main()
