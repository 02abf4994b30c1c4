"""The offload policy pack: `pulumi preview --policy-pack policy` holds a stack to offload's security baseline."""

import sys
from pathlib import Path

from pulumi_policy import PolicyPack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from offload_policies import policies  # noqa: E402  (the pack's own directory, added above)

PolicyPack(name="offload-baseline", policies=policies())
