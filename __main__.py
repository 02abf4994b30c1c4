"""The Pulumi program of a checkout (`pulumi up` here): the packaged program, which `offload fleet` also runs."""

from offload.infra.program import program

program()
