"""Secrets and deploy settings: no public key in production, HTTPS settings from the env, a CSP."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
DEV_KEY = "quorum-insecure-development-key-change-me"


def _python(code: str, env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    dropped = ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env = {k: v for k, v in env.items() if not k.startswith(("DJANGO_SECURE_", "QUORUM_ALLOW_"))}
    env.update({"QUORUM_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("entry_point", ["config.wsgi", "config.asgi"])
def test_it_refuses_to_serve_on_the_development_key_with_debug_off(entry_point, tmp_path):
    refused = _python(f"import {entry_point}", {"DJANGO_DEBUG": "0"}, tmp_path)
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY" in refused.stderr.splitlines()[-1]
    allowed = _python(
        f"import {entry_point}",
        {"DJANGO_DEBUG": "0", "QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY": "1"},
        tmp_path,
    )
    assert allowed.returncode == 0, allowed.stderr


def test_it_refuses_the_development_key_given_explicitly(tmp_path):
    result = _python("import config.wsgi", {"DJANGO_SECRET_KEY": DEV_KEY}, tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr.splitlines()[-1]
    own_key = _python(
        "import config.wsgi", {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}, tmp_path
    )
    assert own_key.returncode == 0, own_key.stderr


def test_it_reads_the_https_settings_from_the_environment(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
        "s.SECURE_PROXY_SSL_HEADER)"
    )
    result = _python(
        code,
        {
            "DJANGO_SECURE_SSL_REDIRECT": "1",
            "DJANGO_SECURE_COOKIES": "1",
            "DJANGO_SECURE_HSTS_SECONDS": "600",
            "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "yes",
            "DJANGO_SECURE_HSTS_PRELOAD": "true",
            "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 6) == [
        "True",
        "True",
        "True",
        "600",
        "True",
        "True",
        "('HTTP_X_FORWARDED_PROTO', 'https')\n",
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "https"),
        ("DJANGO_SECURE_HSTS_SECONDS", "a year"),
        ("DJANGO_SECURE_COOKIES", "sometimes"),
    ],
)
def test_it_refuses_a_bad_https_setting_naming_it(variable, value, tmp_path):
    result = _python("import django; django.setup()", {variable: value}, tmp_path)
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]


def _production_env() -> dict[str, str]:
    """The block docs/deploy.md marks as the production environment."""
    text = (REPO / "docs" / "deploy.md").read_text()
    match = re.search(r"<!-- production-env[^>]*-->\s*```sh\n(.*?)```", text, re.S)
    assert match, "docs/deploy.md lost its production-env block"
    env = {}
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            env[name] = value
    return env


def test_check_deploy_is_clean_under_the_documented_production_env(tmp_path):
    env = _production_env()
    key_file = tmp_path / "quorum-key"
    key_file.write_text(secrets.token_urlsafe(50))
    env["DJANGO_SECRET_KEY_FILE"] = str(key_file)
    result = _python(
        "import sys, runpy; sys.argv = ['manage.py', 'check', '--deploy', '--fail-level', 'WARNING']; "
        "runpy.run_path('manage.py', run_name='__main__')",
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


_INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.I)


@pytest.mark.django_db
def test_it_sends_a_content_security_policy_that_the_pages_comply_with(client, settings):
    from tests.factories import add_member, make_project, make_user

    project = make_project(name="csp", n_prompts=1)
    user = make_user("csp-admin", staff=True)
    add_member(project, user, "admin")
    pages = ["/accounts/login/", "/admin/login/"]
    responses = [client.get(url) for url in pages]
    client.force_login(user)
    pages += ["/", f"/projects/{project.pk}/annotate/", "/admin/", "/api/docs"]
    responses += [client.get(url, follow=True) for url in pages[2:]]
    for url, response in zip(pages, responses, strict=True):
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy, url
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy, url
        # JSON inside <script type="application/json"> is data, not a script: CSP ignores it.
        html = re.sub(
            r'<script type="application/json".*?</script>',
            "",
            response.content.decode(),
            flags=re.S,
        )
        assert not _INLINE.search(html), (url, _INLINE.search(html).group(0))


@pytest.mark.django_db
def test_the_set_up_review_data_and_export_pages_comply_with_it_too(client, users):
    from curation import services
    from curation.models import Flag
    from tests.curation.builders import disputed_ranking_project

    project, _ = disputed_ranking_project(users)
    services.flags_recompute(project_id=project.pk)
    export = services.export_create(project=project, options={}, enqueue=False)
    services.export_build(export_id=export.pk)
    prompt = project.prompts.order_by("id").first()
    flag = Flag.objects.filter(project=project).order_by("id").first()
    base = f"/curation/projects/{project.pk}"
    pages = [
        "/projects/new/",
        f"{base}/review/",
        f"{base}/review/{flag.kind}/",
        f"{base}/flags/{flag.pk}/",
        f"{base}/data/",
        f"{base}/prompts/{prompt.pk}/",
        f"{base}/history/",
        f"{base}/dashboard/",
        f"{base}/exports/",
        f"/curation/exports/{export.pk}/datasheet/",
        "/admin/annotate/project/import/",
        "/admin/axes/accessattempt/",
    ]
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    client.force_login(users["admin"])
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "script-src 'self';" in response["Content-Security-Policy"], url
        html = re.sub(
            r'<script type="application/json".*?</script>',
            "",
            response.content.decode(),
            flags=re.S,
        )
        assert not _INLINE.search(html), (url, _INLINE.search(html).group(0))
