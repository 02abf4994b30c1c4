"""The Pulumi program of a checkout (`pulumi up` here): the packaged program, which `offload fleet` also runs."""

from offload.extras import require_pulumi_or_exit

require_pulumi_or_exit("the offload Pulumi program")  # one line naming the extra, never an ImportError

from offload.infra.program import program  # noqa: E402  (only once pulumi is known to be there)

program()
