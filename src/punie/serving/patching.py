"""Small, tested patches to `mlx_lm.server`, kept as the unified diffs one would send upstream.

Each file in `patches/` is a diff against one mlx-lm module, with a header saying what it
fixes. `install(names)` applies them to the module's source, strictly (every hunk must match
its lines exactly, or it raises naming the patch and the installed mlx-lm version), and
registers the patched module in `sys.modules` before anything imports it.
`python -m punie.serving.patching --patch NAME... -- MODULE ARGS` installs them and then runs
`python -m MODULE ARGS` (`patched_command` builds it; the server starts it through the
launcher like any child). The unpatched server stays the baseline everywhere else.
"""

from __future__ import annotations

import argparse
import importlib.util
import linecache
import re
import runpy
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PATCH_DIR = Path(__file__).with_name("patches")
RUNNER = "punie.serving.patching"  # `python -m` this module: patches, then the target
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(RuntimeError):
    """A patch does not apply to the installed mlx-lm."""


def available() -> list[str]:
    return sorted(p.stem for p in PATCH_DIR.glob("*.diff"))


@dataclass(frozen=True)
class Patch:
    name: str
    module: str  # e.g. mlx_lm.server
    diff: str

    @classmethod
    def load(cls, name: str) -> Patch:
        path = PATCH_DIR / f"{name}.diff"
        if not path.is_file():
            raise PatchError(f"unknown patch {name!r} (known: {', '.join(available())})")
        diff = path.read_text()
        target = re.search(r"^\+\+\+ b/(\S+)\.py$", diff, re.M)
        if target is None:
            raise PatchError(f"{path}: no '+++ b/<module>.py' line")
        return cls(name, target.group(1).replace("/", "."), diff)


def apply_diff(source: str, diff: str, name: str = "patch") -> str:
    """`source` with the unified `diff` applied. Every hunk's lines must match exactly; like
    `patch`, a hunk may sit a few lines from where it says (an earlier patch to the same
    file moved it), and the match nearest its line number wins."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    at = 0  # next line of `lines` to copy
    diff_lines = diff.splitlines(keepends=True)
    i = 0
    while i < len(diff_lines):
        m = _HUNK.match(diff_lines[i])
        i += 1
        if m is None:
            continue
        stated = int(m.group(1)) - 1 if m.group(2) != "0" else int(m.group(1))
        old: list[str] = []
        new: list[str] = []
        while i < len(diff_lines) and diff_lines[i][:1] in (" ", "-", "+", "\\"):
            tag, text = diff_lines[i][:1], diff_lines[i][1:]
            if tag in (" ", "-"):
                old.append(text)
            if tag in (" ", "+"):
                new.append(text)
            i += 1
        found = [s for s in range(at, len(lines) - len(old) + 1) if lines[s : s + len(old)] == old]
        if not found:
            raise PatchError(
                f"patch {name} does not apply to mlx-lm {_mlx_lm_version()} near line "
                f"{stated + 1}: the code there differs (the patch is for mlx-lm 0.32.2; drop "
                "it from the configuration or update the diff)"
            )
        start = min(found, key=lambda s: abs(s - stated))
        out += lines[at:start] + new
        at = start + len(old)
    return "".join(out + lines[at:])


def _mlx_lm_version() -> str:
    try:
        return metadata.version("mlx-lm")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def install(names: list[str]) -> list[Patch]:
    """Apply the named patches to their modules' source and register the patched modules, so
    a later `import mlx_lm.server` (the `python -m mlx_lm server` entry point included) gets
    them. Call before the module is imported anywhere."""
    patches = [Patch.load(n) for n in names]
    for module in dict.fromkeys(p.module for p in patches):
        if module in sys.modules:
            raise PatchError(f"{module} is already imported; patches must be installed first")
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or spec.loader is None:
            raise PatchError(f"cannot find the source of {module}")
        source = Path(spec.origin).read_text()
        for p in (p for p in patches if p.module == module):
            source = apply_diff(source, p.diff, p.name)
        # Tracebacks and inspect show the patched lines, under a name that says so.
        filename = f"{spec.origin} (patched: {', '.join(p.name for p in patches)})"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        mod = types.ModuleType(module)
        mod.__file__ = spec.origin
        mod.__spec__ = spec
        mod.__package__ = module.rpartition(".")[0]
        sys.modules[module] = mod
        try:
            exec(compile(source, filename, "exec"), mod.__dict__)
        except BaseException:
            del sys.modules[module]
            raise
    return patches


def check_patches(names: Sequence[str]) -> None:
    """Refuse unknown patch names before anything starts."""
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ValueError(
            f"unknown server patch(es) {unknown}; known: {', '.join(available()) or 'none'}"
        )


def patched_command(cmd: Sequence[str], names: Sequence[str]) -> list[str]:
    """`[python, -m, MODULE, *ARGS]` -> the same run with the named patches installed first
    (`cmd` unchanged without patches)."""
    if not names:
        return list(cmd)
    python, flag, *rest = cmd
    if flag != "-m":
        raise ValueError(f"expected a `python -m MODULE ...` command, got {list(cmd)[:4]}")
    options = [arg for name in names for arg in ("--patch", name)]
    return [python, "-m", RUNNER, *options, "--", *rest]


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit(f"usage: python -m {RUNNER} --patch NAME... -- MODULE [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog=f"python -m {RUNNER}")
    parser.add_argument("--patch", action="append", default=[], metavar="NAME")
    options = parser.parse_args(argv[:split])
    module, *args = argv[split + 1 :]
    try:
        check_patches(options.patch)
        install(options.patch)
    except (ValueError, PatchError) as e:
        raise SystemExit(f"{RUNNER}: {e}") from None
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
