"""The public halves of the SSH keys a connection will offer: what a worker's login service must know.

They are the same keys `open_connection` authenticates with: the identity file when one is given (`--identity`,
OFFLOAD_SSH_KEY), otherwise the ssh-agent's keys and the usual files in ~/.ssh.
"""

from __future__ import annotations

import os
from pathlib import Path

from offload.errors import ConfigError

DEFAULT_KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")


def public_keys(identity: Path | None, *, home: Path | None = None) -> list[str]:
    """'type base64' lines of the keys an SSH login will offer, identity first; ConfigError when there is none."""
    keys: list[str] = []
    if identity is not None:
        keys.append(_from_identity(identity))
    else:
        keys += _agent_keys()
        ssh_dir = (home or Path.home()) / ".ssh"
        for name in DEFAULT_KEY_FILES:
            pub = ssh_dir / f"{name}.pub"
            if pub.is_file():
                keys.append(_line(pub.read_text(), str(pub)))
    unique = list(dict.fromkeys(keys))
    if not unique:
        raise ConfigError("no SSH key to log in with: there is no ssh-agent key and no ~/.ssh/id_ed25519.pub",
                          hint="create one with `ssh-keygen -t ed25519`, or pass --identity or set OFFLOAD_SSH_KEY")
    return unique


def _from_identity(identity: Path) -> str:
    pub = Path(f"{identity}.pub")
    if pub.is_file():
        return _line(pub.read_text(), str(pub))
    import paramiko

    try:
        key = paramiko.PKey.from_path(identity)
    except (OSError, paramiko.SSHException) as e:
        raise ConfigError(f"cannot read the SSH key {identity}: {e}",
                          hint="pass --identity or set OFFLOAD_SSH_KEY to a readable private key "
                               "without a passphrase, or put its .pub next to it") from None
    return f"{key.get_name()} {key.get_base64()}"


def _agent_keys() -> list[str]:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return []
    import paramiko

    try:
        return [f"{k.get_name()} {k.get_base64()}" for k in paramiko.Agent().get_keys()]
    except paramiko.SSHException:
        return []


def _line(text: str, where: str) -> str:
    parts = text.split()
    if len(parts) < 2:
        raise ConfigError(f"{where} is not an SSH public key")
    return f"{parts[0]} {parts[1]}"
