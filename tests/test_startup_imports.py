"""Start-up cost: Django processes import the heavy libraries only where they are used.

scipy, networkx, pandas, pyarrow, datasets and torch (and numpy under them) cost seconds of
start-up together; every ``manage.py`` command and every web worker used to pay for them through
module-level imports reached from the admin and the services. Checked in fresh interpreters,
since the test process itself has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("scipy", "networkx", "pandas", "pyarrow", "datasets", "torch", "transformers", "numpy")

REPORT = f"""
import atexit, json, sys
atexit.register(lambda: print("HEAVY=" + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules))))
"""

WEB_PROCESS = """
import django
django.setup()
from django.urls import get_resolver
import config.urls, config.wsgi
get_resolver().url_patterns
"""

MANAGE_HELP = """
import runpy
sys.argv = ["manage.py", "help"]
runpy.run_path("manage.py", run_name="__main__")
"""


def _heavy_modules(script: str, tmp_path: Path) -> list[str]:
    env = {
        **os.environ,
        "QUORUM_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY": "1",  # config.wsgi refuses the key otherwise
    }
    result = subprocess.run(
        [sys.executable, "-c", REPORT + script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


def test_it_starts_the_web_process_without_heavy_libraries(tmp_path):
    assert _heavy_modules(WEB_PROCESS, tmp_path) == []


def test_it_runs_manage_py_help_without_heavy_libraries(tmp_path):
    assert _heavy_modules(MANAGE_HELP, tmp_path) == []
