"""Worker boot configuration: the rendered cloud-config passes cloud-init's own schema check, its scripts parse,
and the scripts do what they claim when run against a fake workspace with stubbed system commands."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from offload.errors import ConfigError
from offload.infra import cloudinit
from offload.infra.cloudinit import COS_WORKSPACE, IDLE_GUEST_ATTRIBUTE, LINUX_WORKSPACE, WORKER_CONTAINER
from offload.worker import container as worker_container
from offload.worker.scripts import worker_script

CLOUD_INIT = shutil.which("cloud-init") or "/usr/bin/cloud-init"
BASH = shutil.which("bash") or "/bin/bash"
IMAGE = "us-west1-docker.pkg.dev/p-offload/workers/offload-worker:1"
TIMEOUT = 60


def cos_doc(**kwargs: Any) -> dict[str, Any]:
    text = cloudinit.cos_user_data(**{"image": IMAGE, "idle_stop_minutes": 30, "docker_user": "dev_example_com",
                                      **kwargs})
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def files_of(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def schema_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user-data.yaml"
    path.write_text(text)
    return subprocess.run([CLOUD_INIT, "schema", "--config-file", str(path)], capture_output=True, text=True,
                          timeout=TIMEOUT)


needs_cloud_init = pytest.mark.skipif(not Path(CLOUD_INIT).exists() and os.environ.get("CI") is None,
                                      reason="cloud-init is not installed")


# ---- the documents ------------------------------------------------------------------------------------------


@needs_cloud_init
@pytest.mark.parametrize("idle", [30, 0])
def test_cos_user_data_passes_the_cloud_init_schema(tmp_path: Path, idle: int) -> None:
    text = cloudinit.cos_user_data(image=IMAGE, idle_stop_minutes=idle, docker_user="dev_example_com")
    result = schema_check(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@needs_cloud_init
def test_cloud_init_schema_check_does_catch_mistakes(tmp_path: Path) -> None:
    result = schema_check("#cloud-config\nwrite_files:\n- path: 5\n  permissions: [1]\n", tmp_path)
    assert result.returncode != 0


@needs_cloud_init
def test_linux_user_data_passes_the_cloud_init_schema(tmp_path: Path) -> None:
    text = cloudinit.linux_metadata(idle_stop_minutes=30, owner="dev_example_com")["user-data"]
    result = schema_check(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = yaml.safe_load(text)
    assert {"git", "tmux"} <= set(doc["packages"])


def test_cos_user_data_has_the_keys_it_relies_on() -> None:
    doc = cos_doc()
    assert set(doc) == {"write_files", "runcmd"}
    files = files_of(doc)
    assert set(files) == {
        "/etc/offload/mount-data.sh", "/etc/offload/start-worker.sh", "/etc/offload/idle-stop.sh",
        "/etc/offload/tasks-running.sh", "/etc/offload/host-keys.sh", "/etc/offload/watch-image.sh",
        "/etc/systemd/system/offload-data.service", "/etc/systemd/system/offload-worker.service",
        "/etc/systemd/system/offload-host-keys.service", "/etc/systemd/system/offload-image-watch.service",
        "/etc/systemd/system/offload-idle.service", "/etc/systemd/system/offload-idle.timer"}
    for entry in doc["write_files"]:
        assert entry["owner"] == "root:root" and entry["permissions"] in ("0644", "0755")
    assert doc["runcmd"] == [["systemctl", "daemon-reload"], ["systemctl", "start", "offload-idle.timer"],
                             ["systemctl", "start", "offload-host-keys.service"],
                             ["systemctl", "start", "--no-block", "offload-worker.service"],
                             ["systemctl", "start", "offload-image-watch.service"]]
    worker_unit = files["/etc/systemd/system/offload-worker.service"]
    assert f"Environment=OFFLOAD_IMAGE={IMAGE}" in worker_unit
    assert f"Environment=OFFLOAD_CONTAINER={WORKER_CONTAINER}" in worker_unit
    assert f"Environment=OFFLOAD_WORKSPACE={COS_WORKSPACE}" in worker_unit
    assert "Environment=OFFLOAD_IMAGE_ATTRIBUTE=offload-image" in worker_unit
    assert "Requires=offload-data.service docker.service" in worker_unit
    # The COS pattern: systemd keeps the foreground container up, after the mount; a failed first pull retries.
    assert "After=offload-data.service docker.service" in worker_unit
    assert "Type=simple" in worker_unit and "Restart=always" in worker_unit
    assert "StartLimitIntervalSec=0" in worker_unit
    assert "RemainAfterExit" not in worker_unit
    keys_unit = files["/etc/systemd/system/offload-host-keys.service"]
    assert "Requires=offload-data.service" in keys_unit and "After=offload-data.service" in keys_unit
    assert "Environment=OFFLOAD_HOST_KEYS_DIR=/mnt/disks/data/.offload-host-keys" in keys_unit
    data_unit = files["/etc/systemd/system/offload-data.service"]
    assert "Environment=OFFLOAD_DATA_MOUNT=/mnt/disks/data" in data_unit
    assert "Environment=OFFLOAD_DATA_DEVICE=offload-data" in data_unit
    idle_unit = files["/etc/systemd/system/offload-idle.service"]
    assert "Environment=OFFLOAD_IDLE_MINUTES=30" in idle_unit
    # Whether a task runs is asked inside the worker container, where the tasks' pids mean something.
    assert f"Environment=OFFLOAD_CONTAINER={WORKER_CONTAINER}" in idle_unit
    assert "Environment=OFFLOAD_TASKS_RUNNING=/etc/offload/tasks-running.sh" in idle_unit
    assert files["/etc/offload/tasks-running.sh"] == worker_script("tasks-running.sh")
    assert "OnUnitActiveSec=1min" in files["/etc/systemd/system/offload-idle.timer"]


def test_idle_stop_zero_installs_no_timer() -> None:
    doc = cos_doc(idle_stop_minutes=0)
    assert not any("idle" in path for path in files_of(doc))
    assert ["systemctl", "start", "offload-idle.timer"] not in doc["runcmd"]


def test_unit_values_are_never_shell_or_unit_syntax() -> None:
    for image in ("img; rm -rf /", "img\nExecStart=/bin/evil", "img%n"):
        with pytest.raises(ConfigError, match="OFFLOAD_IMAGE"):
            cloudinit.cos_user_data(image=image, idle_stop_minutes=30, docker_user=None)


def test_embedded_scripts_parse(tmp_path: Path) -> None:
    scripts = {p: c for p, c in files_of(cos_doc()).items() if p.endswith(".sh")}
    scripts["startup-script"] = cloudinit.linux_metadata(idle_stop_minutes=30, owner="dev_example_com")[
        "startup-script"]
    assert len(scripts) == 7
    for name, content in scripts.items():
        path = tmp_path / name.replace("/", "_")
        path.write_text(content)
        shell = "dash" if content.startswith("#!/bin/sh\n") else BASH
        assert content.startswith(("#!/bin/bash\n", "#!/bin/sh\n"))
        result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_the_linux_startup_script_writes_the_idle_check_without_a_container() -> None:
    script = cloudinit.linux_metadata(idle_stop_minutes=20, owner="dev_example_com")["startup-script"]
    assert "cat > /etc/offload/tasks-running.sh <<'OFFLOAD_EOF'" in script
    assert "Environment=OFFLOAD_TASKS_RUNNING=/etc/offload/tasks-running.sh" in script
    assert "Environment=OFFLOAD_CONTAINER" not in script


def test_linux_startup_script_writes_the_same_units_and_enables_them() -> None:
    script = cloudinit.linux_metadata(idle_stop_minutes=20, owner="dev_example_com")["startup-script"]
    assert "cat > /etc/offload/idle-stop.sh <<'OFFLOAD_EOF'" in script
    assert f"Environment=OFFLOAD_WORKSPACE={LINUX_WORKSPACE}" in script
    assert "Environment=OFFLOAD_WORKSPACE_OWNER=dev_example_com" in script
    assert "Environment=OFFLOAD_IDLE_MINUTES=20" in script
    assert "systemctl enable --now offload-idle.timer" in script
    assert "systemctl enable --now offload-data.service" in script
    assert "apt-get install -y -qq --no-install-recommends git tmux" in script


# ---- the scripts, run for real against stubs ----------------------------------------------------------------


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Box:
    """A scratch root: a workspace, a state dir, stubbed commands that log to calls.log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.log.touch()
        self.workspace = root / "workspace"
        self.workspace.mkdir()
        self.state = root / "state"

    def stub(self, name: str, body: str = "") -> None:
        stub(self.bin, name, f'echo "{name} $*" >> {self.log}\n{body}')

    def calls(self, name: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.split(" ", 1)[0] == name]

    def run(self, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        path = self.root / "script.sh"
        path.write_text(script)
        full_env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root / "home"), **env}
        return subprocess.run([BASH, str(path)], capture_output=True, text=True, env=full_env, timeout=TIMEOUT)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


IDLE_SCRIPT = files_of(cos_doc())["/etc/offload/idle-stop.sh"]
TASKS_RUNNING = files_of(cos_doc())["/etc/offload/tasks-running.sh"]
THIS_BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
DEAD_PID = 999999999  # above any pid_max: never a live process


def idle_env(box: Box, minutes: int = 30, ssh: str = "") -> dict[str, str]:
    box.stub("poweroff")
    box.stub("curl")
    box.stub("ss", f"printf '%s' {ssh!r}")
    check = box.root / "tasks-running.sh"
    check.write_text(TASKS_RUNNING)
    return {"OFFLOAD_WORKSPACE": str(box.workspace), "OFFLOAD_IDLE_MINUTES": str(minutes),
            "OFFLOAD_STATE_DIR": str(box.state), "OFFLOAD_TASKS_RUNNING": str(check)}


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that lives for the test: a task's command."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def task_state(box: Box, job: str, task: str, state: str, *, pid: int = DEAD_PID, runner: int = DEAD_PID,
               boot: str = THIS_BOOT) -> None:
    """A task as the job's runner leaves it in the workspace."""
    job_dir = box.workspace / "jobs" / job
    path = job_dir / "tasks" / task
    path.mkdir(parents=True, exist_ok=True)
    with open(job_dir / "tasks.list", "a") as f:
        f.write(f"{task}\n")
    (job_dir / "runner.pid").write_text(f"{runner}\n")
    (job_dir / "boot").write_text(f"{boot}\n")
    (path / "state").write_text(f"{state}\n")
    (path / "pid").write_text(f"{pid}\n")


def idle_since(box: Box, minutes_ago: float) -> None:
    box.state.mkdir(exist_ok=True)
    (box.state / "idle-since").write_text(f"{int(time.time() - minutes_ago * 60)}\n")


def published(box: Box) -> list[str]:
    return [line.split("--data ", 1)[1].split(" ", 1)[0] for line in box.calls("curl")]


def test_idle_worker_powers_off_after_the_idle_minutes(box: Box) -> None:
    env = idle_env(box, minutes=30)
    task_state(box, "job1", "build", "success")
    idle_since(box, 31)
    result = box.run(IDLE_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("poweroff") == ["poweroff "]
    assert published(box) == ["0"]
    assert IDLE_GUEST_ATTRIBUTE in box.calls("curl")[0]


def test_idle_clock_starts_at_the_first_check(box: Box) -> None:
    env = idle_env(box, minutes=30)
    result = box.run(IDLE_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("poweroff") == []
    assert published(box) == ["30"]
    assert abs(int((box.state / "idle-since").read_text()) - time.time()) < 5


def test_not_idle_long_enough_reports_minutes_left(box: Box) -> None:
    env = idle_env(box, minutes=30)
    idle_since(box, 29.5)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == []
    assert published(box) == ["1"]


def test_a_running_task_keeps_the_worker_up_and_resets_the_clock(box: Box, live_pid: int) -> None:
    env = idle_env(box, minutes=30)
    task_state(box, "job1", "build", "success")
    task_state(box, "job2", "test", "running", pid=live_pid)
    idle_since(box, 120)
    result = box.run(IDLE_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("poweroff") == []
    assert published(box) == ["30"]
    assert abs(int((box.state / "idle-since").read_text()) - time.time()) < 5


def test_a_task_whose_process_is_gone_does_not_count(box: Box) -> None:
    env = idle_env(box, minutes=30)
    task_state(box, "job1", "build", "running", pid=DEAD_PID)
    idle_since(box, 45)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == ["poweroff "]


def test_a_running_state_left_from_before_the_boot_does_not_count(box: Box, live_pid: int) -> None:
    env = idle_env(box, minutes=30)
    # After a reboot the recorded pid may name another process: the job's boot id says it is not the task.
    task_state(box, "job1", "build", "running", pid=live_pid, runner=live_pid,
               boot="00000000-0000-0000-0000-000000000000")
    idle_since(box, 45)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == ["poweroff "]


def test_an_ssh_connection_keeps_the_worker_up(box: Box) -> None:
    env = idle_env(box, minutes=30, ssh="0 0 10.10.0.2:22 35.235.241.7:40022\n")
    idle_since(box, 120)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == []
    assert box.calls("ss") == ["ss -H -t -n state established ( sport = :22 )"]


def test_without_ss_sessions_are_found_by_their_sshd_process(box: Box) -> None:
    env = idle_env(box, minutes=5)
    (box.bin / "ss").unlink()
    for tool in ("awk", "stat", "date", "cat", "mkdir", "sh"):
        (box.bin / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    box.stub("pgrep", "exit 0")
    idle_since(box, 6)
    result = box.run(IDLE_SCRIPT, {**env, "PATH": str(box.bin)})
    assert result.returncode == 0, result.stderr
    assert box.calls("pgrep") == ["pgrep -f ^sshd(-session)?: [^ ]+@"]
    assert box.calls("poweroff") == []
    box.stub("pgrep", "exit 1")
    idle_since(box, 6)
    box.run(IDLE_SCRIPT, {**env, "PATH": str(box.bin)})
    assert box.calls("poweroff") == ["poweroff "]


def test_other_task_states_are_idle(box: Box) -> None:
    env = idle_env(box, minutes=5)
    for i, state in enumerate(["success", "failed", "skipped", "runningish", ""]):
        task_state(box, f"job{i}", "main", state)
    idle_since(box, 6)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == ["poweroff "]


def test_a_garbled_clock_file_restarts_the_clock(box: Box) -> None:
    env = idle_env(box, minutes=5)
    box.state.mkdir()
    (box.state / "idle-since").write_text("garbage\n")
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == []
    assert published(box) == ["5"]


MOUNT_SCRIPT = files_of(cos_doc())["/etc/offload/mount-data.sh"]


def mount_env(box: Box, blkid_rc: int) -> dict[str, str]:
    device = box.root / "disk"
    device.write_bytes(b"")
    box.stub("blkid", f"exit {blkid_rc}")
    box.stub("mkfs.ext4")
    box.stub("mountpoint", "exit 1")
    box.stub("mount")
    box.stub("resize2fs")
    return {"OFFLOAD_DATA_DEVICE": "offload-data", "OFFLOAD_DATA_DEVICE_PATH": str(device),
            "OFFLOAD_DATA_MOUNT": str(box.root / "mnt"), "OFFLOAD_WORKSPACE": str(box.root / "mnt" / "offload")}


def test_an_empty_data_disk_is_formatted_then_mounted(box: Box) -> None:
    env = mount_env(box, blkid_rc=2)
    result = box.run(MOUNT_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    device = env["OFFLOAD_DATA_DEVICE_PATH"]
    assert box.calls("blkid") == [f"blkid -p {device}"]
    assert len(box.calls("mkfs.ext4")) == 1 and box.calls("mkfs.ext4")[0].endswith(device)
    assert box.calls("mount") == [f"mount -o discard,defaults,nosuid,nodev {device} {box.root}/mnt"]
    assert Path(env["OFFLOAD_WORKSPACE"]).is_dir()


def test_a_data_disk_with_a_filesystem_is_never_formatted(box: Box) -> None:
    env = mount_env(box, blkid_rc=0)
    result = box.run(MOUNT_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("mkfs.ext4") == []
    assert len(box.calls("mount")) == 1


def test_an_unreadable_data_disk_is_neither_formatted_nor_mounted(box: Box) -> None:
    env = mount_env(box, blkid_rc=4)
    result = box.run(MOUNT_SCRIPT, env)
    assert result.returncode != 0
    assert "refusing to format" in result.stderr
    assert box.calls("mkfs.ext4") == [] and box.calls("mount") == []


def test_the_linux_workspace_is_given_to_the_developer(box: Box) -> None:
    env = mount_env(box, blkid_rc=0)
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    result = box.run(MOUNT_SCRIPT, {**env, "OFFLOAD_WORKSPACE_OWNER": me})
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(Path(env["OFFLOAD_WORKSPACE"]).stat().st_mode) == 0o755


START_SCRIPT = files_of(cos_doc())["/etc/offload/start-worker.sh"]


def start_env(box: Box, image: str, group_line: str) -> dict[str, str]:
    box.stub("docker")
    box.stub("docker-credential-gcr")
    group = box.root / "group"
    group.write_text(f"root:x:0:\n{group_line}\nusers:x:100:\n")
    return {"OFFLOAD_IMAGE": image, "OFFLOAD_CONTAINER": WORKER_CONTAINER,
            "OFFLOAD_WORKSPACE": str(box.root / "data" / "offload"), "OFFLOAD_DOCKER_USER": "dev_example_com",
            "OFFLOAD_GROUP_FILE": str(group)}


def test_the_worker_container_runs_in_the_foreground_for_its_unit_with_the_workspace_at_the_same_path(
        box: Box) -> None:
    env = start_env(box, IMAGE, "docker:x:412:")
    result = box.run(START_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    ws = env["OFFLOAD_WORKSPACE"]
    docker = box.calls("docker")
    assert docker[0] == f"docker rm -f {WORKER_CONTAINER}"
    assert docker[1] == f"docker pull {IMAGE}"
    assert docker[2].startswith(f"docker run --rm --name {WORKER_CONTAINER} --init "
                                f"--label offload.worker={WORKER_CONTAINER} -v {ws}:{ws} -e HOME={ws}/home "
                                f"-e XDG_CACHE_HOME={ws}/cache -w {ws} --entrypoint /bin/sh {IMAGE} -c ")
    assert docker[2].endswith("exec sleep infinity")
    assert box.calls("docker-credential-gcr") == [
        "docker-credential-gcr configure-docker --registries=us-west1-docker.pkg.dev"]
    assert Path(ws).is_dir()


def test_the_developer_joins_the_docker_group_once(box: Box) -> None:
    env = start_env(box, "docker.io/library/debian:bookworm", "docker:x:412:")
    group = Path(env["OFFLOAD_GROUP_FILE"])
    box.run(START_SCRIPT, env)
    box.run(START_SCRIPT, env)
    assert group.read_text().splitlines()[1] == "docker:x:412:dev_example_com"
    assert box.calls("docker-credential-gcr") == []
    group.write_text("docker:x:412:alice\n")
    box.run(START_SCRIPT, env)
    assert group.read_text() == "docker:x:412:alice,dev_example_com\n"


def test_the_worker_entry_installs_tools_only_when_missing(box: Box) -> None:
    # The entry with `exec sleep` replaced, on a PATH of stubs only: with tmux and git, nothing is installed.
    entry = worker_container.ENTRY.replace("exec sleep infinity", "echo ready")
    for name in ("tmux", "git", "apt-get"):
        box.stub(name)
    only_stubs = {"PATH": str(box.bin)}
    result = box.run(entry, only_stubs)
    assert result.stdout.strip() == "ready" and box.calls("apt-get") == []
    (box.bin / "tmux").unlink()
    result = box.run(entry, only_stubs)
    assert result.stdout.strip() == "ready"
    assert [c.split()[1] for c in box.calls("apt-get")] == ["update", "install"]


def test_the_docker_run_line_is_the_container_spec(box: Box) -> None:
    """cloud-init's worker container is made from the same spec as local-docker's and the runtime's heal."""
    doc = cos_doc(owner="dev@example.com")
    env = start_env(box, IMAGE, "docker:x:412:")
    env["OFFLOAD_OWNER"] = "dev@example.com"
    result = box.run(files_of(doc)["/etc/offload/start-worker.sh"], env)
    assert result.returncode == 0, result.stderr
    spec = worker_container.WorkerContainer(name=WORKER_CONTAINER, image=IMAGE, workspace=env["OFFLOAD_WORKSPACE"],
                                            owner="dev@example.com")
    assert box.calls("docker")[2] == " ".join(spec.run_argv(foreground=True))
    assert "--label offload.owner=dev@example.com" in box.calls("docker")[2]
    assert "Environment=OFFLOAD_OWNER=dev@example.com" in files_of(doc)["/etc/systemd/system/offload-worker.service"]


def test_idle_stop_asks_inside_the_worker_container(box: Box, docker_worker: Any) -> None:
    """On COS the tasks run in the container: their pids mean something only there."""
    box.workspace = Path(docker_worker.workspace)
    env = {**idle_env(box, minutes=5), "OFFLOAD_CONTAINER": docker_worker.name,
           "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}
    docker_worker.exec("sh", "-c", "nohup sleep 300 >/dev/null 2>&1 &")
    inner = int(docker_worker.exec("pgrep", "-n", "-f", "sleep 300").stdout.split()[0])
    task_state(box, "job1", "build", "running", pid=inner)
    idle_since(box, 6)
    result = box.run(IDLE_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("poweroff") == [] and published(box) == ["5"]

    docker_worker.exec("kill", str(inner))
    idle_since(box, 6)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == ["poweroff "]


def test_idle_stop_with_the_container_down_is_idle(box: Box) -> None:
    box.stub("docker", 'case $1 in exec) exit 125 ;; inspect) echo false ;; esac')
    env = {**idle_env(box, minutes=5), "OFFLOAD_CONTAINER": "offload-worker"}
    idle_since(box, 6)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("docker")[0].startswith(f"docker exec -i offload-worker sh -s {box.workspace}")
    assert box.calls("poweroff") == ["poweroff "]
    # Docker could not ask a container that runs: it may have tasks, so the worker stays up.
    box.stub("docker", 'case $1 in exec) exit 125 ;; inspect) echo true ;; esac')
    idle_since(box, 6)
    box.run(IDLE_SCRIPT, env)
    assert box.calls("poweroff") == ["poweroff "]


def test_a_failed_pull_without_a_local_copy_fails_the_start_so_systemd_retries(box: Box) -> None:
    env = start_env(box, IMAGE, "docker:x:412:")
    box.stub("docker", 'case $1 in pull) exit 1 ;; image) exit 1 ;; esac')
    result = box.run(START_SCRIPT, env)
    assert result.returncode == 1
    assert "systemd retries" in result.stderr
    assert not any(c.startswith("docker run") for c in box.calls("docker"))


def test_a_failed_pull_with_a_local_copy_runs_that_copy(box: Box) -> None:
    env = start_env(box, IMAGE, "docker:x:412:")
    box.stub("docker", 'case $1 in pull) exit 1 ;; esac')
    result = box.run(START_SCRIPT, env)
    assert result.returncode == 0, result.stderr
    assert box.calls("docker")[-1].startswith("docker run --rm")


def test_the_image_comes_from_instance_metadata_when_the_stack_changed_it(box: Box) -> None:
    env = start_env(box, IMAGE, "docker:x:412:")
    newer = "us-west1-docker.pkg.dev/p-offload/workers/offload-worker@sha256:" + "b" * 64
    box.stub("curl", f"printf '%s' {newer!r}")
    result = box.run(START_SCRIPT, {**env, "OFFLOAD_IMAGE_ATTRIBUTE": "offload-image"})
    assert result.returncode == 0, result.stderr
    (call,) = box.calls("curl")
    assert call.endswith("/instance/attributes/offload-image")
    assert box.calls("docker")[1] == f"docker pull {newer}"
    assert f" {newer} -c " in box.calls("docker")[2]


@pytest.mark.parametrize("answer", ["", "evil image; rm -rf /", "$(reboot)"])
def test_a_blank_or_odd_metadata_image_keeps_the_units_image(box: Box, answer: str) -> None:
    env = start_env(box, IMAGE, "docker:x:412:")
    box.stub("curl", f"printf '%s' {answer!r}")
    result = box.run(START_SCRIPT, {**env, "OFFLOAD_IMAGE_ATTRIBUTE": "offload-image"})
    assert result.returncode == 0, result.stderr
    assert box.calls("docker")[1] == f"docker pull {IMAGE}"


WATCH_SCRIPT = files_of(cos_doc())["/etc/offload/watch-image.sh"]
# A metadata server: each call answers the next line of ANSWERS (failing when none is left), and writes an
# ETag naming that answer to the file given with -D.
CURL_METADATA = r"""line=$(head -n1 ANSWERS)
[ -n "$line" ] || exit 22
sed -i 1d ANSWERS
take=
for a in "$@"; do
  if [ -n "$take" ]; then printf 'ETag: e%s\r\n' "$line" > "$a"; take=; fi
  [ "$a" = -D ] && take=1
done
printf '%s' "$line"
"""


def test_the_image_watch_restarts_the_worker_only_when_the_image_changes(box: Box) -> None:
    # The metadata server: the current image, then (waiting for changes) the same one, a new one, then it fails.
    answers = box.root / "answers"
    answers.write_text("img:1\nimg:1\nimg:2\n")
    body = CURL_METADATA.replace("ANSWERS", str(answers))
    box.stub("curl", body)
    box.stub("systemctl")
    result = box.run(WATCH_SCRIPT, {"OFFLOAD_IMAGE_ATTRIBUTE": "offload-image", "OFFLOAD_STATE_DIR": str(box.state)})
    assert result.returncode == 1
    assert box.calls("systemctl") == ["systemctl restart offload-worker.service"]
    waits = box.calls("curl")[1:]
    assert all("wait_for_change=true" in c for c in waits)
    # Each wait starts from the last answer's ETag, so no change is missed between two requests.
    assert "last_etag=eimg:1" in waits[1] and "last_etag=eimg:2" in waits[2]


HOST_KEYS_SCRIPT = files_of(cos_doc())["/etc/offload/host-keys.sh"]


def _host_key(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", str(path)], check=True,
                   timeout=TIMEOUT)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def _boot_with_keys(box: Box, etc: Path) -> subprocess.CompletedProcess[str]:
    return box.run(HOST_KEYS_SCRIPT, {"OFFLOAD_HOST_KEYS_DIR": str(box.root / "disk" / ".offload-host-keys"),
                                      "OFFLOAD_SSH_DIR": str(etc), "OFFLOAD_METADATA_URL": "http://md/v1"})


def test_host_keys_are_kept_on_the_data_disk_and_come_back_at_every_boot(box: Box) -> None:
    box.stub("curl")
    box.stub("systemctl")
    etc = box.root / "etc-ssh"
    etc.mkdir()
    first_key = _host_key(etc / "ssh_host_ed25519_key")
    result = _boot_with_keys(box, etc)
    assert result.returncode == 0, result.stderr
    kept = box.root / "disk" / ".offload-host-keys"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert (kept / "ssh_host_ed25519_key").read_bytes() == (etc / "ssh_host_ed25519_key").read_bytes()
    assert box.calls("systemctl") == [], "the keys sshd has are the kept ones: nothing to restart"
    assert box.calls("curl")[-1].endswith(f"--data {first_key} http://md/v1/instance/guest-attributes/hostkeys/ssh-ed25519")

    # The next boot: /etc is a fresh tmpfs, and the guest agent made new keys for what it takes for a new instance.
    for path in etc.iterdir():
        path.unlink()
    second_key = _host_key(etc / "ssh_host_ed25519_key")
    assert second_key != first_key
    result = _boot_with_keys(box, etc)
    assert result.returncode == 0, result.stderr
    assert " ".join((etc / "ssh_host_ed25519_key.pub").read_text().split()[:2]) == first_key
    assert stat.S_IMODE((etc / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert box.calls("systemctl") == ["systemctl try-restart sshd.service"]
    # What is published is what sshd now presents: the kept key, replacing the agent's.
    assert box.calls("curl")[-1].split("--data ", 1)[1].startswith(f"{first_key} ")


def test_a_boot_before_sshd_has_keys_saves_nothing_and_publishes_nothing(box: Box) -> None:
    box.stub("curl")
    box.stub("systemctl")
    etc = box.root / "etc-ssh"
    etc.mkdir()
    result = _boot_with_keys(box, etc)
    assert result.returncode == 0, result.stderr
    assert box.calls("curl") == [] and box.calls("systemctl") == []
    assert list((box.root / "disk" / ".offload-host-keys").iterdir()) == []


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("kind", ["cos", "linux"])
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path, kind: str) -> None:
    doc = cos_doc() if kind == "cos" else None
    files = files_of(doc) if doc else {
        f.path: f.content for f in cloudinit.linux_boot(idle_stop_minutes=30, owner="dev_example_com").files}
    units = tmp_path / "units"
    units.mkdir()
    # The units they depend on, as the image has them; verify checks that they exist.
    for unit in ("docker.service", "google-guest-agent.service", "sshd.service"):
        (units / unit).write_text(f"[Unit]\nDescription=stand-in for {unit}\n\n[Service]\nExecStart=/bin/true\n")
    written = []
    for path, content in files.items():
        if path.startswith("/etc/systemd/system/"):
            target = units / Path(path).name
            target.write_text(content)
            written.append(str(target))
    assert written
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *written], capture_output=True, text=True,
                            timeout=TIMEOUT, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    problems = [line for line in result.stderr.splitlines()
                if "offload" in line and "Command /etc/offload" not in line]
    assert result.returncode == 0 or not problems, result.stderr
    assert not problems, result.stderr


def test_the_debian_package_install_is_retried_until_the_network_carries_it(box: Box) -> None:
    script = cloudinit.linux_metadata(idle_stop_minutes=0, owner="dev_example_com")["startup-script"]
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("if ! command -v"))
    end = lines.index("fi", start)
    packages = "\n".join(["set -euo pipefail", *lines[start:end + 1]]) + "\n"
    failures = box.root / "failures"
    failures.write_text("2")
    # apt-get update fails twice (no NAT yet), then works; tmux and git are missing until it has.
    box.stub("apt-get", f'n=$(cat {failures}); if [ "$1" = update ] && [ "$n" -gt 0 ]; then '
                        f'echo $((n - 1)) > {failures}; exit 100; fi')
    box.stub("sleep")
    for tool in ("seq", "cat"):
        (box.bin / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    result = box.run(packages, {"PATH": str(box.bin)})
    assert result.returncode == 0, result.stderr
    assert [c.split()[1] for c in box.calls("apt-get")] == ["update", "update", "update", "install"]
    assert len(box.calls("sleep")) == 2
    assert "attempt 2" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_boot_scripts_pass_shellcheck(tmp_path: Path) -> None:
    scripts = {p: c for p, c in files_of(cos_doc(owner="dev@example.com")).items()
               if p.endswith(".sh") and c.startswith("#!/bin/bash")}
    assert {"/etc/offload/host-keys.sh", "/etc/offload/watch-image.sh", "/etc/offload/start-worker.sh"} <= set(scripts)
    for name, content in scripts.items():
        path = tmp_path / name.replace("/", "_")
        path.write_text(content)
        result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert result.returncode == 0, f"{name}: {result.stdout}"
