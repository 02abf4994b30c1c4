"""`offload doctor`: check, without changing anything, what a deploy and a run need, and print the fix of each
failure."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from offload.cli.common import IapOpt, IdentityOpt, JsonOpt, OutputsOpt, StackOpt
from offload.cli.init import detect
from offload.deploy import (COS_BOOT_DISK_GB, GCE_APIS, LINUX_BOOT_DISK_GB, WORKSTATION_APIS, cpu_metric,
                            deploy_roles, machine_vcpus, quota_needs)
from offload.errors import ConfigError, OffloadError, UsageError
from offload.outputs import ProviderType, StackOutputs, local_outputs
from offload.stackconfig import CLOUD_PROVIDERS, STATIC_PROVIDERS, StackConfig, static_outputs

if TYPE_CHECKING:  # the jobs layer is imported when the command runs, not at start-up
    from offload.jobs.doctor import Check, ProjectPlan
    from offload.jobs.fleet import Reach

app = typer.Typer()

OK, FAILED = "✓", "✗"


@app.command("doctor", epilog="Exit codes: 0 nothing blocks, 1 a check failed, 2 usage or configuration error.")
def doctor(stack: StackOpt = None, outputs: OutputsOpt = None, identity: IdentityOpt = None, iap: IapOpt = False,
           as_json: JsonOpt = False) -> None:
    """Check what `fleet up` and `run` need, one line each (✓ or ✗), with the command or grant that fixes each ✗.

    A GCP stack: gcloud and its IAP tunnel, Application Default Credentials and their quota project, the
    project, Service Usage and Resource Manager (step 0), the stack's APIs, your deploy permissions and the
    quotas; once deployed, your permissions on each instance, OS Login, host keys and the login. An ssh or local
    stack (or --outputs): name and TCP, the pinned key, the login, the workspace, git, tmux and docker, free disk.
    """
    from offload.jobs.doctor import passed
    from offload.jobs.fleet import Reach

    if stack and outputs:
        raise UsageError("pass --stack or --outputs, not both")
    reach = Reach(identity=identity, via_iap=iap)
    checks = _checks(stack, outputs, reach)
    if as_json:
        from offload.cli.ui import print_json

        print_json({"checks": [c.to_dict() for c in checks]})
    else:
        for c in checks:
            typer.echo(f"{OK if c.ok else FAILED} {_shown(c.name)}: {_shown(c.detail)}")
            if not c.ok and c.fix:
                for line in c.fix.splitlines():
                    typer.echo(f"    {_shown(line)}")
        failed = sum(not c.ok for c in checks)
        typer.echo("nothing blocks" if not failed else f"{failed} of {len(checks)} checks failed")
    if not passed(checks):
        raise typer.Exit(1)


def _shown(text: str) -> str:
    """TEXT for the terminal: a check's detail can carry what a worker answered (a tool's version), and no control
    character of it reaches the terminal (an escape sequence could retitle it or set its clipboard)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _checks(stack: str | None, outputs: Path | None, reach: "Reach") -> list["Check"]:
    from offload.jobs.doctor import worker_checks

    path = outputs or (Path(os.environ["OFFLOAD_OUTPUTS"]) if os.environ.get("OFFLOAD_OUTPUTS") else None)
    if path is not None:
        return worker_checks(StackOutputs.load(path), reach)
    name = stack or os.environ.get("OFFLOAD_STACK")
    if not name:
        return worker_checks(local_outputs(), reach)
    from offload.stack import stack_config, stack_dir

    config = stack_config(name)
    if config is None:
        raise ConfigError(f"stack {name!r} has no stack file {stack_dir().stack_file(name)}",
                          hint=f"create it with `offload init --stack {name}`, or pass --outputs FILE")
    if config.provider in STATIC_PROVIDERS:
        return worker_checks(static_outputs(config), reach, stack=name)
    return _deployed_stack_checks(name, config, reach)


def _deployed_stack_checks(name: str, config: StackConfig, reach: "Reach") -> list["Check"]:
    from offload.jobs.doctor import (Check, gcloud_checks, gcp_libraries_check, passed, project_checks, pulumi_check,
                                     worker_checks)

    checks: list[Check] = []
    libraries = gcp_libraries_check() if config.provider in CLOUD_PROVIDERS else None
    # gcloud's account as its configuration files say (read as `init` reads them, without starting gcloud).
    account = detect(os.environ).account
    if libraries is not None and not libraries.ok:
        found, _ = gcloud_checks(account)
        return [*found, pulumi_check(), libraries]  # the rest needs the Google clients
    if libraries is not None:
        # gcloud takes a second or more to start: it answers while the APIs are asked, and its answer is waited
        # for only to write a grant's command.
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(gcloud_checks, account)
            pulumi = pulumi_check()
            project = project_checks(project_plan(config), lambda: asked.result()[1].account)
            checks += [*asked.result()[0], pulumi, libraries, *project]
    else:
        checks.append(pulumi_check())
    if not passed(checks):
        return checks  # the outputs of a stack that cannot be deployed yet tell nothing more
    from offload.stack import stack_outputs

    try:
        deployed = StackOutputs.from_dict(stack_outputs(name))
    except (OffloadError, ValueError, KeyError) as e:
        detail = e.message if isinstance(e, OffloadError) else str(e)
        checks.append(Check("workers", True, f"not deployed yet ({detail}); after `offload fleet up --stack {name}` "
                                             "doctor checks them too"))
        return checks
    if not deployed.workers:
        checks.append(Check("workers", True, f"none deployed yet; after `offload fleet up --stack {name}` doctor "
                                             "checks them too"))
        return checks
    return checks + worker_checks(deployed, reach, stack=name)


def project_plan(config: StackConfig) -> "ProjectPlan":
    """What CONFIG's stack asks of its project."""
    from offload.jobs.doctor import ProjectPlan

    workstation = config.provider is ProviderType.WORKSTATION
    boot = {ProviderType.GCE_COS: COS_BOOT_DISK_GB, ProviderType.GCE_LINUX: LINUX_BOOT_DISK_GB}.get(config.provider, 0)
    quotas = quota_needs(workers=config.workers, vcpus=machine_vcpus(config.machine_type) or 0,
                         disk_gb=boot + config.data_disk_gb, own_network=config.network is None,
                         cpu=cpu_metric(config.machine_type))
    return ProjectPlan(project=config.project or "", region=config.region,
                       apis=WORKSTATION_APIS if workstation else GCE_APIS, roles=deploy_roles(workstation),
                       quotas=quotas)
