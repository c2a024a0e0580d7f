"""Running the `previsit` command as a real subprocess, the way a user would, for CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

TIMEOUT_S = 120


def cli_env() -> dict[str, str]:
    """The caller's environment without settings that would point a test at another server or key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREVISIT_FHIR", "PREVISIT_CLINICIAN"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


def run_previsit(*args: str, data_dir: Path, typed: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m previsit ARGS --data-dir DATA_DIR`, with `typed` as its standard input."""
    return subprocess.run(
        [sys.executable, "-m", "previsit", *args, "--data-dir", str(data_dir)],
        input=typed,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=cli_env(),
        timeout=TIMEOUT_S,
        check=False,
    )
