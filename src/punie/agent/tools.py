"""The agent's sandboxed workspace tools: `read_file` and `run_command`.

Both return text and never raise to the agent: a refusal starts with "refused:" and says why,
a failure starts with "error:". The sandbox is an allow-list, not a deny-list: one read-only
program, no shell, every path argument must resolve inside the workspace (symlinks included),
a minimal environment, a timeout that kills the whole process group and an output cap.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic_ai.toolsets import FunctionToolset

SAFE_PATH = "/usr/bin:/bin"
MAX_PATH_CHARS = 512
MAX_COMMAND_CHARS = 1000
MAX_ARGS = 64
# read_file reads at most this many bytes before capping: enough for any source file the
# model should see, small enough that a huge file never lands in memory.
MAX_FILE_BYTES = 256 * 1024

ALLOWED_PROGRAMS = ("grep", "rg", "find", "ls", "cat", "head", "tail", "wc")

# No shell runs, so these would be passed literally; refusing them tells the model plainly
# that pipelines, chaining, redirection and substitution do not exist here.
SHELL_METACHARACTERS = (";", "|", "&", "`", "$(", "${", ">", "<", "\n", "\r")

# Options that run programs, write or delete files, follow symlinks out of the workspace or
# never terminate. Long options match exactly or as `--opt=value`.
FORBIDDEN_OPTIONS: dict[str, frozenset[str]] = {
    "find": frozenset(
        {
            "-exec",
            "-execdir",
            "-ok",
            "-okdir",
            "-delete",
            "-fprint",
            "-fprint0",
            "-fprintf",
            "-fls",
            "-L",
            "-follow",
            "-files0-from",
        }
    ),
    "grep": frozenset({"-R", "--dereference-recursive"}),
    "rg": frozenset(
        {"--pre", "--pre-glob", "-L", "--follow", "-z", "--search-zip", "--hostname-bin"}
    ),
    "ls": frozenset({"-L", "--dereference"}),
    "tail": frozenset({"-f", "-F", "--follow", "--retry", "--pid"}),
    "cat": frozenset(),
    "head": frozenset(),
    "wc": frozenset({"--files0-from"}),  # reads file names (absolute ones too) from a file
}


@dataclass(frozen=True)
class Workspace:
    """The directory the agent may look at, with its tool limits."""

    root: Path
    timeout_s: float = 10.0
    output_cap: int = 4000


def _cap(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    return f"{text[:cap]}\n[output truncated at {cap} chars]"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _resolve_inside(root: Path, rel: str) -> Path | None:
    """`root/rel` with every symlink resolved, or None when it leaves the workspace."""
    try:
        resolved = (root / rel).resolve()
    except (OSError, RuntimeError):  # symlink loop, name too long
        return None
    return resolved if _inside(resolved, root) else None


def _path_problem(path: str) -> str | None:
    """Why `path` (a workspace-relative path) is refused, or None when it is acceptable."""
    if "\x00" in path:
        return "NUL byte in path"
    if len(path) > MAX_PATH_CHARS:
        return f"path longer than {MAX_PATH_CHARS} chars"
    if path.startswith("~"):
        return "home-directory paths (~) are not allowed; use a path relative to the workspace"
    if os.path.isabs(path):
        return "absolute paths are not allowed; use a path relative to the workspace"
    if ".." in path.split("/"):
        return "'..' is not allowed; paths must stay inside the workspace"
    return None


def _guarded(ws: Workspace, verb: str, tool: Callable[[Workspace, str], str], arg: str) -> str:
    """`tool(ws, arg)` capped; an exception becomes an error: message naming `verb` and `arg`."""
    try:
        out = tool(ws, arg)
    except Exception as e:  # the agent gets a message, never a traceback
        out = f"error: could not {verb} {arg!r}: {type(e).__name__}: {e}"
    return _cap(out, ws.output_cap)


def read_file(ws: Workspace, path: str) -> str:
    """Content of a text file inside the workspace (capped), or a refused:/error: message."""
    return _guarded(ws, "read", _read_file, path)


def _read_file(ws: Workspace, path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        return "refused: empty path; give a file path relative to the workspace"
    path = path.strip()
    if problem := _path_problem(path):
        return f"refused: {problem}"
    root = ws.root.resolve()
    target = _resolve_inside(root, path)
    if target is None:
        return f"refused: {path!r} resolves outside the workspace (or is a symlink loop)"
    if not target.exists():
        return f"error: no such file: {path}"
    if target.is_dir():
        return f"refused: {path!r} is a directory; use run_command with ls or find"
    # O_NONBLOCK: opening a FIFO must not hang; O_NOFOLLOW: the target is already resolved,
    # so a symlink swapped in after the check is refused instead of followed.
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return f"refused: {path!r} is not a regular file"
        data = f.read(MAX_FILE_BYTES + 1)
    too_big = len(data) > MAX_FILE_BYTES
    data = data[:MAX_FILE_BYTES]
    if b"\x00" in data[:8192]:
        return f"refused: {path!r} is a binary file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut by the byte cap is fine; anything else is binary.
        if not (too_big and e.start >= len(data) - 4):
            return f"refused: {path!r} is not UTF-8 text"
        text = data[: e.start].decode("utf-8")
    if too_big and len(text) <= ws.output_cap:
        text += f"\n[output truncated at {MAX_FILE_BYTES} bytes]"
    return text


def _argument_problem(program: str, arg: str, root: Path) -> str | None:
    """Why one argument of an allowed program is refused, or None."""
    if arg.startswith("-") and arg != "-":
        name = arg.split("=", 1)[0]
        forbidden = FORBIDDEN_OPTIONS[program]
        # GNU tools accept abbreviated long options (`--deref` is `--dereference`), so a
        # prefix of a forbidden long option is refused too.
        for option in sorted(forbidden):
            if name == option or (
                name.startswith("--") and len(name) > 2 and option.startswith(name)
            ):
                return (
                    f"option {option} is not allowed "
                    "(it writes, deletes, runs programs, follows symlinks or never ends)"
                )
        # Short-option clusters such as `-rnR` for grep/ls/rg/tail.
        if program != "find" and not arg.startswith("--"):
            for letter in arg[1:]:
                if f"-{letter}" in forbidden:
                    return f"option -{letter} is not allowed"
        if "/" in arg or ".." in arg:
            return (
                f"option {arg!r} carries a path; pass paths as separate arguments "
                "relative to the workspace"
            )
        values = [arg.split("=", 1)[1]] if "=" in arg else []
    else:
        values = [arg]
    for value in values:
        if problem := _path_problem(value):
            return f"{problem} (argument {value!r})"
        # Every non-option word is checked as a path, patterns included: a pattern only
        # resolves inside the workspace, while a symlink that points out is caught here.
        if value and _resolve_inside(root, value) is None:
            return f"{value!r} resolves outside the workspace (or is a symlink loop)"
    return None


def _command_problem(command: str) -> str | None:
    if "\x00" in command:
        return "NUL byte in command"
    if len(command) > MAX_COMMAND_CHARS:
        return f"command longer than {MAX_COMMAND_CHARS} chars"
    for meta in SHELL_METACHARACTERS:
        if meta in command:
            shown = {"\n": "newline", "\r": "carriage return"}.get(meta, meta)
            return (
                f"shell metacharacter {shown!r} is not allowed: no shell runs, so there are no "
                "pipes, chaining, redirection or substitution; run one program"
            )
    return None


def run_command(ws: Workspace, command: str) -> str:
    """Output of one allow-listed read-only command run in the workspace, or a refused:/error:."""
    return _guarded(ws, "run", _run_command, command)


def _run_command(ws: Workspace, command: str) -> str:
    if not isinstance(command, str) or not command.strip():
        return "refused: empty command"
    if problem := _command_problem(command):
        return f"refused: {problem}"
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return f"error: cannot parse command ({e})"
    if not argv:
        return "refused: empty command"
    if len(argv) > MAX_ARGS:
        return f"refused: more than {MAX_ARGS} arguments"
    program = argv[0]
    if program not in ALLOWED_PROGRAMS:
        allowed = ", ".join(p for p in ALLOWED_PROGRAMS if shutil.which(p, path=SAFE_PATH))
        return f"refused: {program!r} is not an allowed program; allowed: {allowed}"
    root = ws.root.resolve()
    for arg in argv[1:]:
        if problem := _argument_problem(program, arg, root):
            return f"refused: {problem}"
    if shutil.which(program, path=SAFE_PATH) is None:
        hint = "; use grep -rn instead" if program == "rg" else ""
        return f"error: {program} is not installed here{hint}"
    # The bare name is looked up on SAFE_PATH (the child's PATH), and error messages read
    # "grep: ..." rather than "/usr/bin/grep: ...": fewer tokens for the model.
    return _execute(argv, ws, root)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# Defence in depth under the allow-list: where util-linux `prlimit` exists (Linux), the child
# runs with RLIMIT_FSIZE=0, so it cannot write a single byte to any file. Setting the limit
# from the parent after spawning would race with the child; prlimit sets it before exec.
_PRLIMIT = shutil.which("prlimit", path=SAFE_PATH)


def _execute(argv: list[str], ws: Workspace, root: Path) -> str:
    # Read at most this many bytes: a flood is cut (and its process killed) long before it
    # can fill memory; 4 bytes per char covers any UTF-8 text up to the cap.
    limit = ws.output_cap * 4 + 1
    env = {"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8", "HOME": str(root)}
    if _PRLIMIT is not None:
        argv = [_PRLIMIT, "--fsize=0:0", "--", *argv]
    proc = subprocess.Popen(
        argv,
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout kills every child
    )
    buf = bytearray()
    flooded = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            buf.extend(chunk[: limit - len(buf)])
            if len(buf) >= limit:
                flooded.set()
                _kill_group(proc)
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=ws.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        rc = proc.wait()
    reader.join(timeout=2)
    if proc.stdout is not None:
        proc.stdout.close()
    text = bytes(buf).decode("utf-8", errors="replace")
    if timed_out and not flooded.is_set():
        return f"error: command timed out after {ws.timeout_s:g}s\n{text}"
    if flooded.is_set():
        return text
    if not text:
        return f"(no output, exit status {rc})"
    if rc != 0:
        text = f"{text.rstrip()}\n[exit status {rc}]"
    return text


def workspace_toolset(ws: Workspace) -> FunctionToolset:
    """The two tools the agent sees. Docstrings become tool descriptions: keep them short."""

    def run_command_tool(command: str) -> str:
        """Run one read-only command (grep, find, ls, cat, head, tail, wc) in the workspace.

        Args:
            command: e.g. grep -rn "def save" .
        """
        return run_command(ws, command)

    def read_file_tool(path: str) -> str:
        """Read a text file of the workspace.

        Args:
            path: relative path, e.g. accounts/views.py
        """
        return read_file(ws, path)

    toolset: FunctionToolset = FunctionToolset()
    toolset.add_function(run_command_tool, takes_ctx=False, name="run_command")
    toolset.add_function(read_file_tool, takes_ctx=False, name="read_file")
    return toolset
