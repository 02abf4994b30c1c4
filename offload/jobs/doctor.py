"""`offload doctor`'s checks: what stands between a developer and a working `fleet up` and `run`, each found
without changing anything, with the exact command or grant that fixes it.

A GCP project before its first deploy (gcloud, credentials, the project, its services, the deployer's
permissions, quotas); a deployed GCE worker (the developer's own permissions on it, OS Login, its host keys, a
login); any worker reached over SSH or on this machine (name, TCP, the pinned key, the login, the workspace, git,
tmux and docker, free disk). Google clients are imported inside the GCP checks only: an `ssh` stack's doctor never
loads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from offload.deploy import (BOOTSTRAP_APIS, DEVELOPER_INSTANCE_PERMISSIONS, TUNNEL_PERMISSION, DeployRole,
                            QuotaNeed, QuotaScope, enable_command, quota_fix)
import offload.extras as extras
from offload.errors import CloudApiError, CloudNotFound, CloudServiceDisabled, OffloadError, reason
from offload.jobs.fleet import Fleet, Reach
from offload.outputs import ProviderType, StackOutputs, WorkerRecord, fingerprint
from offload.providers import WorkerProvider, provider_for

# Below this much free space in a workspace, builds and git fail part-way.
MIN_FREE_GB = 2.0
# What every job needs where it runs, and the argv that prints its version.
TOOLS = (("git", ("git", "--version")), ("tmux", ("tmux", "-V")))
CONNECT_TIMEOUT = 5.0
GCLOUD_TIMEOUT = 60.0
GCLOUD_INSTALL = "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
PULUMI_INSTALL = "install the Pulumi CLI: https://www.pulumi.com/docs/install/"


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it is fine, what was seen, and (when not fine) what fixes it."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def passed(checks: Sequence[Check]) -> bool:
    return all(c.ok for c in checks)


# -- this machine: gcloud and pulumi ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Gcloud:
    """What the local gcloud says: its account, when one is set."""

    path: str | None
    account: str | None = None


def gcloud_checks(account: str | None) -> tuple[list[Check], Gcloud]:
    """gcloud is installed, logged in (ACCOUNT, its configured account, has credentials: the IAP tunnel needs
    them), and has its IAP tunnel command."""
    path = shutil.which("gcloud")
    if path is None:
        return [Check("gcloud", False, "gcloud is not on PATH (the IAP tunnel and logins need it)", GCLOUD_INSTALL)], \
            Gcloud(None)
    if not account:
        return [Check("gcloud", False, f"{path} has no account", "gcloud auth login"), _iap_command(path)], \
            Gcloud(path)
    try:
        done = subprocess.run([path, "auth", "list", "--format=json"], capture_output=True, text=True,
                              timeout=GCLOUD_TIMEOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        listed = json.loads(done.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        return [Check("gcloud", False, f"`gcloud auth list` failed: {reason(e)}", GCLOUD_INSTALL)], Gcloud(path)
    credentialed = {a.get("account") for a in listed if isinstance(a, dict)} if isinstance(listed, list) else set()
    if account not in credentialed:
        check = Check("gcloud", False, f"{path}: account {account} has no credentials here", "gcloud auth login")
    else:
        check = Check("gcloud", True, f"{path}, logged in as {account}")
    return [check, _iap_command(path)], Gcloud(path, account)


def _iap_command(path: str) -> Check:
    """`gcloud compute start-iap-tunnel` is there: its module in the SDK's command tree, else its --help runs."""
    sdk = Path(os.path.realpath(path)).parent.parent
    if (sdk / "lib" / "surface" / "compute" / "start_iap_tunnel.py").is_file():
        return Check("iap tunnel", True, "gcloud compute start-iap-tunnel is installed")
    try:
        ok = subprocess.run([path, "compute", "start-iap-tunnel", "--help"], capture_output=True,
                            timeout=GCLOUD_TIMEOUT, stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        return Check("iap tunnel", True, "gcloud compute start-iap-tunnel is installed")
    return Check("iap tunnel", False, "this gcloud has no `compute start-iap-tunnel` command",
                 "gcloud components install beta (or reinstall the Google Cloud CLI with its compute commands)")


def gcp_libraries_check() -> Check:
    """The libraries a GCP stack needs (the extra `offload[gcp]`) are installed: found, not loaded, which takes
    seconds."""
    absent = extras.missing(extras.Extra.GCP)
    if absent:
        return Check("gcp libraries", False, f"not installed: {', '.join(absent)}",
                     extras.install_command(extras.Extra.GCP))
    return Check("gcp libraries", True, "the Google clients, pulumi and pulumi_gcp are installed")


def pulumi_check() -> Check:
    path = shutil.which("pulumi")
    if path is None:
        return Check("pulumi", False, "the pulumi CLI is not on PATH (`offload fleet up` drives it)", PULUMI_INSTALL)
    return Check("pulumi", True, path)


# -- a GCP project before its first deploy ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectPlan:
    """What a stack will ask of its project: where, which APIs, the deployer's roles and the quotas."""

    project: str
    region: str | None
    apis: tuple[str, ...]
    roles: tuple[DeployRole, ...]
    quotas: tuple[QuotaNeed, ...]


def project_checks(plan: ProjectPlan, account: Callable[[], str | None]) -> list[Check]:
    """Credentials and their quota project, step 0's services, the project, the stack's APIs, the deployer's
    permissions and the quotas. ACCOUNT gives gcloud's account, asked for only when a grant's command needs whom
    to grant (the credentials' own account comes first)."""
    from offload.providers.google_api import application_default_credentials
    from offload.providers.project_api import ProjectApi

    p = plan.project
    checks: list[Check] = []
    try:
        creds = application_default_credentials()
    except CloudApiError as e:
        return [Check("credentials", False, e.message, "gcloud auth application-default login")]

    def who() -> str | None:
        return creds.account or account()

    if creds.kind == "user" and not creds.quota_project:
        checks.append(Check("credentials", False, "Application Default Credentials (user) have no quota project",
                            f"gcloud auth application-default set-quota-project {p}"))
    else:
        quota = f", quota project {creds.quota_project}" if creds.quota_project else ""
        checks.append(Check("credentials", True, f"Application Default Credentials ({creds.kind}{quota})"))
    api = ProjectApi(p)
    step0 = enable_command(BOOTSTRAP_APIS, p)
    if creds.quota_project and creds.quota_project != p:
        # Calls are billed to, and refused by, the quota project: the two must be on there as well.
        step0 += "\n" + enable_command(BOOTSTRAP_APIS, creds.quota_project)

    try:
        on = api.enabled(BOOTSTRAP_APIS)
    except CloudServiceDisabled as e:
        on = None
        checks.append(Check("step 0", False, f"{e.service or 'Service Usage'} is off: nothing can be enabled", step0))
    except CloudApiError as e:
        on = None
        checks.append(Check("step 0", False, e.message, e.hint))
    if on is not None:
        off = [s for s, enabled in on.items() if not enabled]
        checks.append(Check("step 0", not off, f"off in {p}: {', '.join(off)} (`pulumi up` needs them on first)"
                            if off else f"{' and '.join(BOOTSTRAP_APIS)} are on", step0 if off else None))

    try:
        state = api.state()
        checks.append(Check("project", state == "ACTIVE", f"{p} is {state}",
                            None if state == "ACTIVE" else f"gcloud projects undelete {p} (or set gcp:project)"))
    except CloudServiceDisabled as e:
        checks.append(Check("project", False, f"cannot read {p}: {e.service or 'Cloud Resource Manager'} is off",
                            step0))
        return checks
    except CloudNotFound:
        checks.append(Check("project", False, f"{p} does not exist, or {who() or 'you'} may not see it",
                            "check gcp:project in the stack, or ask for access to the project"))
        return checks
    except CloudApiError as e:
        checks.append(Check("project", False, e.message, e.hint))
        return checks

    try:
        on = api.enabled(plan.apis)
        off = [s.removesuffix(".googleapis.com") for s, enabled in on.items() if not enabled]
        checks.append(Check("apis", True, f"off now, and enabled by `fleet up`: {', '.join(off)}" if off else
                            f"the stack's {len(on)} APIs are on"))
    except CloudApiError as e:
        checks.append(Check("apis", False, e.message, e.hint))

    quotas = _quotas(api, plan)  # first: the Compute client loads while gcloud answers
    checks.append(_permissions(api, plan, who))
    return checks + quotas


def _permissions(api: Any, plan: ProjectPlan, account: Callable[[], str | None]) -> Check:
    wanted = sorted({p for r in plan.roles for p in r.permissions})
    try:
        held = api.held_permissions(wanted)
    except CloudApiError as e:
        return Check("deploy permissions", False, e.message, e.hint)
    missing = [r for r in plan.roles if not set(r.permissions) <= held]
    who = account()
    if not missing:
        return Check("deploy permissions", True, f"{who or 'you'} may deploy: {len(plan.roles)} roles' permissions "
                                                 "held")
    member = (f"serviceAccount:{who}" if who and who.endswith(".gserviceaccount.com") else
              f"user:{who}" if who else "user:YOU@EXAMPLE.COM")
    lacking = "; ".join(f"{r.role} ({', '.join(p for p in r.permissions if p not in held)})" for r in missing)
    fix = "\n".join(f"gcloud projects add-iam-policy-binding {plan.project} --member {member} --role {r.role}"
                    for r in missing)
    return Check("deploy permissions", False, f"{who or 'you'} lack {lacking}", fix)


def _quotas(api: Any, plan: ProjectPlan) -> list[Check]:
    found: dict[QuotaScope, dict[str, Any]] = {}
    for scope, read in ((QuotaScope.REGION, lambda: api.region_quotas(plan.region)),
                        (QuotaScope.PROJECT, api.project_quotas)):
        if not any(n.scope is scope for n in plan.quotas) or (scope is QuotaScope.REGION and not plan.region):
            continue
        try:
            found[scope] = read()
        except CloudServiceDisabled:
            return [Check("quotas", False, f"cannot read quotas: compute.googleapis.com is off in {plan.project}",
                          f"{enable_command(('compute.googleapis.com',), plan.project)} (or `offload fleet up` "
                          "enables it; quotas are then checked)")]
        except CloudApiError as e:
            return [Check("quotas", False, e.message, e.hint)]
    checks = []
    for need in plan.quotas:
        quota = found.get(need.scope, {}).get(need.metric)
        where = f" in {plan.region}" if need.scope is QuotaScope.REGION else ""
        if quota is None:
            checks.append(Check(f"quota {need.metric}", True, f"no {need.metric} quota{where}"))
            continue
        ok = quota.left >= need.amount
        checks.append(Check(f"quota {need.metric}", ok, f"needs {need.amount:g}{where}, {quota.left:g} of "
                            f"{quota.limit:g} left", None if ok else quota_fix(need.metric, plan.project,
                                                                               plan.region)))
    return checks


# -- workers ---------------------------------------------------------------------------------------------------


def worker_checks(outputs: StackOutputs, reach: Reach, *, stack: str | None = None) -> list[Check]:
    """Every worker of OUTPUTS, at once (as every fan-out of offload, up to OFFLOAD_PARALLEL), each one's checks
    named after it and in the outputs' order; one worker's failures never stop another's checks."""
    heard: dict[str, list[str]] = {}
    providers = []
    for record in outputs.workers:
        said = heard.setdefault(record.name, [])
        providers.append(provider_for(outputs, record, dataclasses.replace(reach.options(), progress=said.append)))
    with Fleet(outputs, providers=providers) as fleet:
        outcomes = fleet.each(lambda p: list(_worker(p, outputs, p.record, stack, heard[p.name])))
    checks: list[Check] = []
    for outcome in outcomes:
        if outcome.error is not None:  # a step no check expected to fail
            checks.append(Check(f"{outcome.provider.name}: worker", False, outcome.error.message, outcome.error.hint))
        checks += outcome.value or []
    return checks


def _worker(provider: WorkerProvider, outputs: StackOutputs, record: WorkerRecord, stack: str | None,
            heard: list[str]) -> Iterator[Check]:
    """RECORD's checks in order, stopping at the first failure that makes the next ones meaningless. HEARD is what
    the provider said on the way (a GCE worker's fallback to an IAP tunnel)."""
    name = record.name
    if outputs.provider.is_gce:
        gce, stopped = _gce_worker(outputs, record, stack)
        yield from gce
        if stopped or not all(c.ok for c in gce):
            return  # a stopped worker is not woken to be checked
    entry = provider.ssh_entry()
    if entry is not None and outputs.provider is ProviderType.SSH:
        network = list(_network(name, entry.host, entry.port, entry.proxy_command))
        yield from network
        if not all(c.ok for c in network):
            return
        key = _host_key(provider, record, stack)
        yield key
        if not key.ok:
            return
    login = _login(provider, record, _route(provider, outputs, heard))
    yield login
    if not login.ok:
        return
    yield from _workspace(provider, record, stack)
    yield from _tools(provider, record)


def _network(name: str, host: str, port: int, proxy: str | None) -> Iterator[Check]:
    if proxy:
        yield Check(f"{name}: address", True, f"{host}:{port} through its ProxyCommand")
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        yield Check(f"{name}: address", False, f"cannot resolve {host}: {reason(e)}",
                    "check the host's name in the stack's offload:hosts (or its HostName in ~/.ssh/config)")
        return
    shown = addresses[0][4][0]
    yield Check(f"{name}: address", True, f"{host} is {shown}" if shown != host else host)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        yield Check(f"{name}: tcp", False, f"{host}:{port} does not answer: {reason(e)}",
                    f"start sshd on {host}, or check the port ({port}) and the firewalls between")
        return
    yield Check(f"{name}: tcp", True, f"{host}:{port} answers")


def _host_key(provider: WorkerProvider, record: WorkerRecord, stack: str | None) -> Check:
    name = record.name
    try:
        seen = provider.scan_host_key()
    except OffloadError as e:
        return Check(f"{name}: host key", False, f"cannot read its host key: {e.message}", e.hint)
    shown = f"{seen.split()[0]} {fingerprint(seen)}"
    if not record.host_keys:
        return Check(f"{name}: host key", True, f"{shown}, not pinned")
    if _key_id(seen) in {_key_id(k) for k in record.host_keys}:
        return Check(f"{name}: host key", True, f"{shown} matches the pinned key")
    pinned = ", ".join(fingerprint(k) for k in record.host_keys)
    where = f"{record.user + '@' if record.user else ''}{record.host}:{record.port or 22}"
    repin = (f"offload init --provider ssh --host {shlex.quote(where)} --name {shlex.quote(name)} --stack "
             f"{shlex.quote(stack)} --force" if stack else "update host_keys in the stack outputs")
    return Check(f"{name}: host key", False, f"it presents {shown}, not the pinned {pinned}",
                 f"if the host's key changed on purpose (ask its admin), pin the new one: {repin}")


def _route(provider: WorkerProvider, outputs: StackOutputs, heard: list[str]) -> str:
    """How a GCE worker was reached, for the login's detail: directly, or through an IAP tunnel."""
    if not outputs.provider.is_gce:
        return ""
    if provider.options.via_iap:
        return " through an IAP tunnel (--iap)"
    return " through an IAP tunnel (not directly)" if any("IAP tunnel" in m for m in heard) else " directly"


def _login(provider: WorkerProvider, record: WorkerRecord, route: str = "") -> Check:
    remote = provider.ssh_entry() is not None
    name = f"{record.name}: {'login' if remote else 'worker'}"
    try:
        provider.ensure_ready()
        result = provider.host.run(["true"], timeout=60)
    except OffloadError as e:  # a refused login, a changed key, no answer: each says what to do
        return Check(name, False, e.message, e.hint)
    if not result.ok:
        return Check(name, False, f"`true` failed there: {result.error_line()}",
                     f"check the login shell and startup files of {record.user or 'the login user'} there")
    return Check(name, True, f"logged in as {record.user or 'the login user'}{route}" if remote else
                 f"{provider.kind.value} worker answers")


# Fixed shell text: the paths come in as arguments. For the first of them that exists, says whether it is a
# writable directory, then its free KiB; a workspace that does not exist yet is made by the first run, so its
# nearest existing ancestor is the one that must be writable.
_PROBE = ('for d do if [ -e "$d" ]; then if [ -d "$d" ] && [ -w "$d" ]; then w=yes; else w=no; fi; '
          'printf "%s\\n%s\\n" "$d" "$w"; df -Pk "$d" | tail -n 1; exit 0; fi; done; exit 3')


def _workspace(provider: WorkerProvider, record: WorkerRecord, stack: str | None) -> Iterator[Check]:
    name, ws = record.name, provider.workspace
    path = PurePosixPath(ws)
    candidates = [str(path), *(str(p) for p in path.parents)]
    try:
        result = provider.host.run(["sh", "-c", _PROBE, "sh", *candidates], timeout=60)
    except OffloadError as e:
        yield Check(f"{name}: workspace", False, e.message, e.hint)
        return
    lines = result.text().splitlines()
    if not result.ok or len(lines) < 3:
        yield Check(f"{name}: workspace", False, f"cannot look at {ws}: {result.error_line()}",
                    "check that `sh` and `df` work there, and that the workspace is an absolute path")
        return
    found, writable, df = lines[0], lines[1] == "yes", lines[2].split()
    who = record.user or "the login user"
    if not writable:
        fix = (f"make {found} writable by {who} there (`chmod u+w {shlex.quote(found)}` as its owner), or set "
               "`workspace` in the stack's offload:hosts to a directory it may write")
        what = ws if found == ws else f"{found}, where {ws} would be made,"
        yield Check(f"{name}: workspace", False, f"{what} is not writable by {who}", fix)
        return
    yield Check(f"{name}: workspace", True, f"{ws} is writable" if found == ws else
                f"{ws} does not exist yet; {found} is writable, so the first run makes it")
    try:
        free_gb = int(df[3]) / (1024 * 1024)
    except (IndexError, ValueError):
        yield Check(f"{name}: disk", False, f"cannot read free space: {' '.join(df)}",
                    f"check `df -Pk {shlex.quote(found)}` there")
        return
    ok = free_gb >= MIN_FREE_GB
    clean = f"offload clean --all --stack {shlex.quote(stack)}" if stack else "offload clean --all"
    yield Check(f"{name}: disk", ok, f"{free_gb:.1f} GiB free in {found}" + ("" if ok else
                f" (under {MIN_FREE_GB:g} GiB)"), None if ok else
                f"{clean} removes finished jobs and idle worktrees; else free space there")


def _tools(provider: WorkerProvider, record: WorkerRecord) -> Iterator[Check]:
    name = record.name
    run: Callable[[Sequence[str]], Any] = lambda argv: provider.host.run(list(argv), timeout=60)  # noqa: E731
    where = "there"
    if record.container:
        docker = provider.docker_command()
        try:
            version = provider.host.run([*docker, "--version"], timeout=60)
        except OffloadError as e:
            yield Check(f"{name}: docker", False, e.message, e.hint)
            return
        if not version.ok:
            yield Check(f"{name}: docker", False, f"`docker --version` failed: {version.error_line()}",
                        "install Docker there and let the login user use it (group docker)")
            return
        state = provider.host.run([*docker, "inspect", "--format", "{{.State.Running}}", record.container],
                                  timeout=60)
        running = state.ok and state.text().strip() == "true"
        yield Check(f"{name}: docker", running, f"{version.text().strip()}; container {record.container} "
                    + ("is running" if running else "is not running"),
                    None if running else "`offload run` starts it (or recreates it from the stack's image)")
        if not running:
            return
        run = lambda argv: provider.exec(list(argv), timeout=60)  # noqa: E731
        where = f"in container {record.container}"
    for tool, argv in TOOLS:
        try:
            result = run(argv)
        except OffloadError as e:
            yield Check(f"{name}: {tool}", False, e.message, e.hint)
            continue
        if result.ok:
            yield Check(f"{name}: {tool}", True, result.text().strip().splitlines()[0] if result.text().strip()
                        else tool)
        else:
            yield Check(f"{name}: {tool}", False, f"{tool} is missing {where}",
                        f"install {tool} {where} (Debian: `apt-get install -y {tool}`)")


# -- a deployed GCE worker -------------------------------------------------------------------------------------


def _gce_worker(outputs: StackOutputs, record: WorkerRecord, stack: str | None) -> tuple[list[Check], bool]:
    """The checks of a GCE worker through the APIs, and whether it is stopped."""
    stopped: list[bool] = []
    checks = list(_gce_checks(outputs, record, stack, stopped))
    return checks, bool(stopped)


def _gce_checks(outputs: StackOutputs, record: WorkerRecord, stack: str | None,
                stopped: list[bool]) -> Iterator[Check]:
    from offload.providers.gce_api import ComputeApi
    from offload.providers.oslogin_api import OsLoginApi

    name = record.name
    instance = record.instance or name
    try:
        api = ComputeApi.for_worker(record)
    except OffloadError as e:
        yield Check(f"{name}: instance", False, e.message, e.hint)
        return
    redeploy = f"offload fleet up --stack {shlex.quote(stack)}" if stack else "offload fleet up"
    from offload.providers.project_api import ProjectApi

    try:
        held = api.held_permissions(instance, DEVELOPER_INSTANCE_PERMISSIONS)
        held |= ProjectApi(api.project).held_on_tunnel(api.zone, instance, [TUNNEL_PERMISSION])
    except CloudApiError as e:
        yield Check(f"{name}: permissions", False, e.message, e.hint)
        return
    missing = [p for p in (*DEVELOPER_INSTANCE_PERMISSIONS, TUNNEL_PERMISSION) if p not in held]
    yield Check(f"{name}: permissions", not missing,
                f"you lack {', '.join(missing)} on {instance}" if missing else
                f"you hold the {len(held)} permissions offload uses on {instance}",
                None if not missing else f"`{redeploy}` grants them to {outputs.developer}; run `gcloud auth "
                f"application-default login` as {outputs.developer}")
    try:
        info = api.get(instance)
    except CloudApiError as e:
        yield Check(f"{name}: instance", False, e.message, e.hint)
        return
    if info.stopped:
        stopped.append(True)
        yield Check(f"{name}: instance", True, f"{instance} is stopped; `offload run` wakes it")
    else:
        yield Check(f"{name}: instance", True, f"{instance} is {info.status}")
    if outputs.developer:
        try:
            profile = OsLoginApi(outputs.developer, record.project).login_profile()
            yield Check(f"{name}: os login", True, f"{outputs.developer} logs in as {profile.username}"
                        if profile.username else f"{outputs.developer} has no POSIX account in "
                        f"{record.project} yet: the first `offload run` registers your key and makes it")
        except CloudApiError as e:
            yield Check(f"{name}: os login", False, e.message, e.hint)
    if info.stopped:
        return
    try:
        keys = api.host_keys(instance)
    except CloudApiError as e:
        yield Check(f"{name}: host keys", False, e.message, e.hint)
        return
    yield Check(f"{name}: host keys", bool(keys), f"{len(keys)} published in guest attributes" if keys else
                f"{instance} has published no host keys in its guest attributes",
                None if keys else f"wait for it to finish booting; if it stays so, `{redeploy}` (the stack turns "
                "guest attributes on)")


def _key_id(key: str) -> str:
    return " ".join(key.split()[:2])
