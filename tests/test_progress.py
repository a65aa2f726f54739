"""Progress as i/N with an ETA: the line benchmarks print, the lines probes print to stderr,
and their parents passing those on as they come; no transformers advisory on a normal run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from punie.measurement.progress import Progress, clock_text, is_progress_line, show_progress
from punie.serving.runtime import mlx_env, run_captured

NOISE = "PyTorch was not found"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_the_mean_time_per_item_times_the_items_left() -> None:
    clock = FakeClock()
    progress = Progress(10, clock=clock)
    assert progress.line(0) == "[0/10, ETA ?]"
    clock.now += 30.0  # 3 done in 30 s: 10 s each, 7 left
    assert progress.eta_s(3) == pytest.approx(70.0)
    assert progress.line(3) == "[3/10, ETA 1:10]"
    clock.now += 70.0
    assert progress.line(10) == "[10/10, ETA 0:00]"
    assert clock_text(3725) == "1:02:05" and clock_text(59.6) == "1:00"


def test_a_probe_reports_when_due_and_its_lines_are_recognised(capsys) -> None:
    clock = FakeClock()
    progress = Progress(4, every_s=5.0, clock=clock)
    clock.now += 2.0
    assert progress.report(1, "acceptance probe", "prompts")  # the first: an ETA at once
    clock.now += 2.0
    assert not progress.report(2, "acceptance probe", "prompts")  # 2 s after the last
    clock.now += 4.0
    assert progress.report(3, "acceptance probe", "prompts", note="k=3")
    assert progress.report(4, "acceptance probe", "prompts")  # the last, always
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "acceptance probe 1/4 prompts, ETA 0:06",
        "acceptance probe 3/4 prompts, ETA 0:03 (k=3)",
        "acceptance probe 4/4 prompts, ETA 0:00",
    ]
    assert all(is_progress_line(line) for line in err)
    assert is_progress_line("  [2/3] distill 64/600 rows, ETA ? (3.1 s)")
    assert not is_progress_line("Traceback (most recent call last):")
    assert not is_progress_line("loaded 3/4 shards")
    show_progress("Warning: something")
    show_progress("direct floor 5/9 turns, ETA 0:12")
    assert capsys.readouterr().out == "  direct floor 5/9 turns, ETA 0:12\n"


CHILD = """
import sys, time
for i in range(1, 4):
    print(f"toy probe {i}/3 prompts, ETA 0:0{3 - i}", file=sys.stderr, flush=True)
    time.sleep(0.3)
print("a warning the parent keeps", file=sys.stderr, flush=True)
print("result")
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def toy_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "toy_probe.py").write_text(CHILD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "toy_probe"


def test_a_childs_progress_reaches_the_parent_as_it_comes(toy_probe: str) -> None:
    seen: list[tuple[float, str]] = []
    done = run_captured(
        toy_probe, ["3"], blas="off", on_stderr=lambda line: seen.append((time.monotonic(), line))
    )
    end = time.monotonic()
    assert done.returncode == 3 and done.stdout == "result\n"
    assert [line for _, line in seen][:3] == [
        f"toy probe {i}/3 prompts, ETA 0:0{3 - i}" for i in (1, 2, 3)
    ]
    assert end - seen[0][0] > 0.5  # the first line came while the child still worked
    assert "a warning the parent keeps" in done.stderr  # the whole stderr, for an error message
    with pytest.raises(subprocess.TimeoutExpired):
        run_captured(toy_probe, ["0"], blas="off", timeout_s=0.4, on_stderr=lambda line: None)


def test_no_transformers_advisory_on_a_normal_run() -> None:
    """`punie-lab` imports transformers with its tokenizer code and mlx children import it with
    mlx_lm; without PyTorch it prints an advisory on every import."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFORMERS_")}
    bare = subprocess.run(
        [sys.executable, "-c", "import transformers"], capture_output=True, text=True, env=env
    )
    if NOISE not in bare.stderr:
        pytest.skip("this install's transformers prints no advisory: nothing to silence")
    cli = subprocess.run(
        [str(bin_dir / "punie-lab"), "doctor", "--help"], capture_output=True, text=True, env=env
    )
    assert cli.returncode == 0 and "punie-lab doctor" in cli.stdout
    assert NOISE not in cli.stdout + cli.stderr
    # An mlx child: only the advisory is off; transformers' real warnings still print.
    code = (
        "import mlx_lm, transformers\n"
        "transformers.utils.logging.get_logger('transformers').warning('a real warning')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=mlx_env("off", env)
    )
    assert child.returncode == 0, child.stderr
    assert NOISE not in child.stderr and "a real warning" in child.stderr
