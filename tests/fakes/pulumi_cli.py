"""A stand-in for the pulumi CLI, which these machines do not have, for the real Automation API to drive."""

from __future__ import annotations

from pathlib import Path

import pytest

# A stand-in for the pulumi CLI: it logs each call (its directory and arguments), answers `version`, keeps the
# stacks it was asked to create as files, so `stack select` of one it never created fails as the real CLI does, and
# answers `stack output` with the file `outputs` (none: no outputs).
FAKE_PULUMI = """\
#!/bin/sh
printf '%s|%s\\n' "$PWD" "$*" >> "$FAKE_PULUMI_DIR/calls"
[ "$1" = --non-interactive ] && shift
case "$1 $2" in
version*) echo "v$FAKE_PULUMI_VERSION" ;;
"stack select") [ -e "$FAKE_PULUMI_DIR/stack-$4" ] || { echo "error: no stack named '$4' found" >&2; exit 255; } ;;
"stack init") : > "$FAKE_PULUMI_DIR/stack-$3" ;;
"stack output") cat "$FAKE_PULUMI_DIR/outputs" 2> /dev/null || echo '{}' ;;
*) echo "error: the fake pulumi does not do $*" >&2; exit 1 ;;
esac
"""


def fake_pulumi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put FAKE_PULUMI first on PATH; returns the directory where it keeps its calls and stacks."""
    from importlib.metadata import version

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(FAKE_PULUMI)
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_PULUMI_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_PULUMI_VERSION", version("pulumi"))
    return tmp_path
