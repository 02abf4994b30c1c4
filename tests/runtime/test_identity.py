"""The public keys a login offers: what OS Login is told about."""

from __future__ import annotations

from pathlib import Path

import subprocess

import pytest

from offload.errors import ConfigError
from offload.runtime.identity import public_keys


def _key(path: Path, *, pub: bool) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(path)], check=True)
    line = Path(f"{path}.pub").read_text().split()
    if not pub:
        Path(f"{path}.pub").unlink()
    return f"{line[0]} {line[1]}"


def test_the_identity_files_public_half_without_its_comment(tmp_path: Path) -> None:
    expected = _key(tmp_path / "id", pub=True)
    assert public_keys(tmp_path / "id", home=tmp_path) == [expected]


def test_an_identity_without_a_pub_file_is_read_from_the_private_key(tmp_path: Path) -> None:
    expected = _key(tmp_path / "id", pub=False)
    assert public_keys(tmp_path / "id", home=tmp_path) == [expected]


def test_without_an_identity_the_usual_files_are_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    expected = _key(tmp_path / ".ssh" / "id_ed25519", pub=True)
    assert public_keys(None, home=tmp_path) == [expected]


def test_no_key_at_all_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(ConfigError) as info:
        public_keys(None, home=tmp_path)
    assert "ssh-keygen" in info.value.line()
