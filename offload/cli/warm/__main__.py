"""`python -m offload.cli.warm DIRECTORY PERSIST`: the warm command server (started by `client.start_server`)."""

import sys
from pathlib import Path

from offload.cli.warm.server import serve

sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2])))
