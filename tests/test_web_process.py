"""The web process never imports torch: the pure reward-model core loads only in workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import django
django.setup()
from django.urls import get_resolver
import config.urls, config.celery, workers.tasks, annotate.admin, workers.admin
get_resolver().url_patterns
from django.contrib import admin
admin.autodiscover()
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("heavy:", heavy)
sys.exit(1 if heavy else 0)
"""


def test_it_never_imports_torch_in_the_web_process(tmp_path):
    env = {
        **os.environ,
        "QUORUM_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy: []" in result.stdout
