"""A new worker's first login: the workspace is made and checked, and missing tools are named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from offload.errors import RemoteCommandError
from offload.jobs.fleet import Reach
from offload.jobs.setup import check_worker
from offload.outputs import StackOutputs, local_outputs
from tests.conftest import StartSshd
from tests.workers import make_traversable, sshd_record


def test_the_workspace_is_made(tmp_path: Path) -> None:
    out = local_outputs(str(tmp_path / "ws"))
    result = check_worker(out, out.workers[0], Reach())
    assert (result.name, result.missing) == ("local", ())
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["jobs", "repos", "trees"]


def test_missing_tools_are_named(tmp_path: Path, start_sshd: StartSshd) -> None:
    # The worker's logins get a PATH with what the workspace needs, and git, but no tmux.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir", "test", "git"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    make_traversable(bin_dir)
    worker = start_sshd(extra_config=(f"SetEnv PATH={bin_dir}",), isolate_tmux=False)
    out = StackOutputs.from_dict({"provider": "ssh", "workers": [sshd_record(worker)]})
    assert check_worker(out, out.workers[0], Reach(identity=worker.key_path)).missing == ("tmux",)


def test_a_workspace_that_cannot_be_made_says_which_flag_to_change(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = local_outputs(str(tmp_path / "file" / "ws"))
    with pytest.raises(RemoteCommandError) as caught:
        check_worker(out, out.workers[0], Reach())
    assert caught.value.line().startswith("creating the workspace failed on worker local: mkdir: ")
    assert caught.value.line().endswith("(pass --workspace with a directory root may create)")
