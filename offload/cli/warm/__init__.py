"""Warm commands: a server that runs each job command in a process already warm.

Most of what a command costs on this machine is starting Python and loading offload. The warm server loads it
once and then forks a child per command; the `offload` process a user starts (`offload.cli.main`) hands it the
command (its arguments, working directory, environment and umask) and its own stdin, stdout and stderr (passed over
a Unix socket, so output goes straight to the terminal or pipe), forwards the signals it gets to the child, and exits
with the child's exit code. The child reaches workers through the connection agent like any command. Only the
job commands that need no terminal of their own go this way; `attach`, `shell`, `run --attach` and everything
else start the usual way.

Each installation of offload (a Python and a package root: another virtualenv, another checkout) has a server of
its own, beside the agent's socket (see `offload.paths.agent_dir`) under a name made from the installation, so a
server only ever runs its own installation's code. It answers only its own user, and exits after OFFLOAD_PERSIST
idle seconds (0: no server); a command that finds none runs the usual way and starts one for the next. A server
whose code is older than the command's (offload changed since it started) is not used, and exits.

Protocol, one Unix stream connection per command: the client sends one frame (`offload.frames`) `q` whose payload
is the request as JSON (`argv`, `cwd`, `env`, `umask` and its code stamp), with its stdin, stdout and stderr
attached as file descriptors. The server answers `!` when it does not take the command (nothing ran), else the
child answers `p` (its pid), and `x` (its exit code) when the command ends.

`client` is the `offload` process's side (light: the executable imports it first); `server` is the server.
"""
