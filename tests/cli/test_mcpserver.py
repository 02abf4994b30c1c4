"""The MCP server's own words: the CLI's error lines said in the tools' terms, an unknown argument refused by
name, and the wait cap's setting. (The server itself is driven by a real client in tests/e2e/test_mcp.py.)"""

from __future__ import annotations

import pytest

from offload.cli.mcpserver import DEFAULT_MAX_WAIT, max_wait_seconds, tool_words, unknown_arguments
from offload.errors import UsageError


@pytest.mark.parametrize("cli, tool", [
    ("no job j on worker w (see `offload status`)", "no job j on worker w (see the `status` tool)"),
    ("job j has not ended (wait with `offload logs j -f`)", "job j has not ended (wait with the `logs` tool)"),
    ("its result is kept: `offload pull j`", "its result is kept: the `pull` tool"),
    ("see it with `offload diff j`", "see it with the `diff` tool"),
    ("w is not running (`offload run` starts it)", "w is not running (the `run` tool starts it)"),
    ("unreachable (is it running? try `offload status`)", "unreachable (is it running? try the `status` tool)"),
    ("job j has tasks a, b; pick one with --task", "job j has tasks a, b; pick one with the `task` argument"),
    ("--ref v9: no such commit in /r", "ref: v9: no such commit in /r"),
    ("--env takes a variable name, got 'a b'", "env takes a variable name, got 'a b'"),
    # No tool does this: the agent can hand the command to the user.
    ("part of it was applied: `offload apply --undo j` puts back", "part of it was applied: `offload apply --undo j` "
                                                                    "puts back"),
])
def test_the_clis_words_become_the_tools(cli: str, tool: str) -> None:
    assert tool_words(cli) == tool


def test_an_unknown_argument_is_named_with_what_the_tool_takes() -> None:
    assert unknown_arguments("run", ["command", "wait_second"], ["command", "wait_seconds"]) == (
        "offload: run: unknown argument 'wait_second' (did you mean wait_seconds? run takes command, wait_seconds)")
    assert unknown_arguments("status", ["x", "y"], []) == (
        "offload: status: unknown arguments 'x', 'y' (status takes no arguments)")
    assert unknown_arguments("check", ["job"], ["job"]) is None


def test_the_wait_cap_is_a_number_of_seconds() -> None:
    assert max_wait_seconds({}) == DEFAULT_MAX_WAIT == 45
    assert max_wait_seconds({"OFFLOAD_MCP_MAX_WAIT": " 3 "}) == 3
    assert max_wait_seconds({"OFFLOAD_MCP_MAX_WAIT": ""}) == DEFAULT_MAX_WAIT
    for bad in ("soon", "-1", "nan", "inf", "3601"):
        with pytest.raises(UsageError, match="OFFLOAD_MCP_MAX_WAIT is a number of seconds from 0 to 3600"):
            max_wait_seconds({"OFFLOAD_MCP_MAX_WAIT": bad})
