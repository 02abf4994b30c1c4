"""The socket the agent and the warm server listen on: private from the start, and what a newer process put in its
place is left alone."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from offload.listener import Listener


def test_a_listener_is_private_and_takes_its_files_along(tmp_path: Path) -> None:
    listener = Listener(tmp_path / "s.sock", tmp_path / "s.pid")
    assert stat.S_IMODE((tmp_path / "s.sock").stat().st_mode) == 0o600
    assert (tmp_path / "s.pid").read_text() == f"{os.getpid()}\n"
    assert listener.ours()
    listener.close()
    assert not (tmp_path / "s.sock").exists() and not (tmp_path / "s.pid").exists()


def test_what_a_newer_process_put_in_its_place_stays(tmp_path: Path) -> None:
    old = Listener(tmp_path / "s.sock", tmp_path / "s.pid")
    (tmp_path / "s.sock").unlink()  # thought stale: the next process takes the path
    with socket.socket(socket.AF_UNIX) as newer:
        newer.bind(str(tmp_path / "s.sock"))
        (tmp_path / "s.pid").write_text("999999\n")
        assert not old.ours()
        old.close()
        assert (tmp_path / "s.sock").exists() and (tmp_path / "s.pid").read_text() == "999999\n"
