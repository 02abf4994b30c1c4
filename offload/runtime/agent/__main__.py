"""`python -m offload.runtime.agent DIRECTORY PERSIST`: the connection agent (started by the client when none
answers)."""

import sys

from offload.runtime.agent.server import main

sys.exit(main(sys.argv[1:]))
