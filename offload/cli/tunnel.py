"""`offload tunnel`: a ProxyCommand for workers whose tunnel only listens on a local port (Cloud Workstations)."""

from __future__ import annotations

from typing import Annotated

import typer

from offload.cli.app import app

tunnel_app = typer.Typer(help="ProxyCommands for workers reached through a local-port tunnel (used in the stack "
                              "outputs and ssh-config; not run by hand).", no_args_is_help=True)
app.add_typer(tunnel_app, name="tunnel", hidden=True)


@tunnel_app.command("workstation", help="Relay stdin/stdout to PORT of a Cloud Workstation through "
                                        "`gcloud workstations start-tcp-tunnel`.")
def workstation(
    name: Annotated[str, typer.Argument(help="Workstation id.")],
    port: Annotated[int, typer.Argument(help="Port on the workstation (22 for SSH).")],
    project: Annotated[str, typer.Option("--project", help="Google Cloud project.")],
    region: Annotated[str, typer.Option("--region", help="Workstation cluster region.")],
    cluster: Annotated[str, typer.Option("--cluster", help="Workstation cluster id.")],
    config: Annotated[str, typer.Option("--config", help="Workstation config id.")],
) -> None:
    from offload.runtime.tunnel import relay, workstation_tunnel_argv

    argv = workstation_tunnel_argv(name, port, project=project, region=region, cluster=cluster, config=config)
    raise typer.Exit(relay(argv))
