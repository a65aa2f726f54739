"""The server patches: each diff applies exactly to the installed mlx-lm, or refuses loudly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from punie.serving.patching import Patch, PatchError, apply_diff, available

SOURCE = "one\ntwo\nthree\nfour\n"
DIFF = """--- a/m.py
+++ b/m.py
@@ -2,2 +2,3 @@
 two
-three
+THREE
+three and a half
"""


def test_a_hunk_replaces_exactly_its_lines() -> None:
    assert apply_diff(SOURCE, DIFF) == "one\ntwo\nTHREE\nthree and a half\nfour\n"


def test_a_hunk_that_does_not_match_is_refused_with_the_line() -> None:
    with pytest.raises(PatchError, match=r"does not apply .* near line 2"):
        apply_diff(SOURCE.replace("two", "deux"), DIFF, "demo")


def test_a_hunk_moved_by_an_earlier_patch_still_applies_where_its_lines_are() -> None:
    assert apply_diff("zero\n" + SOURCE, DIFF) == "zero\none\ntwo\nTHREE\nthree and a half\nfour\n"


def test_every_patch_applies_on_top_of_every_other() -> None:
    names = available()
    spec = importlib.util.find_spec("mlx_lm.server")
    assert spec is not None and spec.origin is not None
    for order in (names, names[::-1]):
        source = Path(spec.origin).read_text()
        for name in order:
            source = apply_diff(source, Patch.load(name).diff, name)
        compile(source, spec.origin, "exec")


def test_an_unknown_patch_is_named_with_the_known_ones() -> None:
    with pytest.raises(PatchError, match="unknown patch 'nope'"):
        Patch.load("nope")


@pytest.mark.parametrize("name", available())
def test_every_patch_applies_to_the_installed_mlx_lm_and_compiles(name: str) -> None:
    patch = Patch.load(name)
    spec = importlib.util.find_spec(patch.module)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    patched = apply_diff(source, patch.diff, name)
    assert patched != source
    compile(patched, spec.origin, "exec")


def test_install_makes_the_server_module_the_patched_one() -> None:
    """In a fresh interpreter: after install, `import mlx_lm.server` is the patched code."""
    code = (
        "from punie.serving.patching import install\n"
        "install(['lazy-logprobs'])\n"
        "import inspect, mlx_lm.server as s\n"
        "src = inspect.getsource(s.ResponseGenerator._serve_single)\n"
        "assert 'if args.logprobs else 0.0' in src\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
