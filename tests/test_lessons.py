"""Every lesson runs as a script, from its own folder, and ends with its check passing ("OK ...").

Lessons are discovered with a glob, so a new chapter is tested as soon as it exists.
`NANOAGENT_LESSON_QUICK=1` asks lessons to shrink anything slow. BLAS gets one thread
unless the caller chose otherwise: the lessons' matrices are small, and multi-threaded
BLAS stalls badly when the machine is busy (as a test machine often is).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("*/lesson.py"))


def test_lessons_exist():
    assert LESSONS, f"no lessons found under {LESSONS_DIR}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.parent.name)
def test_lesson_has_a_readme(lesson):
    assert (lesson.parent / "README.md").is_file(), f"{lesson.parent.name} has no README.md"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.parent.name)
def test_lesson_runs_and_passes_its_check(lesson):
    env = {**os.environ, "NANOAGENT_LESSON_QUICK": "1"}
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    run = subprocess.run([sys.executable, lesson.name], cwd=lesson.parent, env=env,
                         capture_output=True, text=True, timeout=900)
    tail = f"\n--- stdout (end) ---\n{run.stdout[-3000:]}\n--- stderr (end) ---\n{run.stderr[-3000:]}"
    assert run.returncode == 0, f"{lesson.parent.name} exited with {run.returncode}{tail}"
    assert any(line.startswith("OK") for line in run.stdout.splitlines()), \
        f"{lesson.parent.name} printed no 'OK ...' line{tail}"
