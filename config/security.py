"""Web-process safeguards: the refusal to serve with the public development key, and the CSP.

Kept apart from ``settings.py`` because both act on the web process only: management commands,
Celery workers and the test suite may run on the development key (they sign no cookies), while a
web server that runs on it accepts session cookies anyone can forge from this repository.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse


def refuse_development_secret_key() -> None:
    """Stops a web server from starting on the public key unless it is a local, declared use.

    Call from the WSGI/ASGI entry points, after Django is set up.
    """
    if settings.DEBUG or settings.QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY:
        return
    if settings.SECRET_KEY == settings.QUORUM_DEVELOPMENT_SECRET_KEY:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY: must be set (or DJANGO_SECRET_KEY_FILE) to serve with "
            "DJANGO_DEBUG off; QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY=1 allows the public "
            "development key for local use (make demo)"
        )


class ContentSecurityPolicyMiddleware:
    """Adds ``QUORUM_CONTENT_SECURITY_POLICY`` to every response that does not set its own.

    The pages load scripts and styles only from /static/ (no inline ``<script>``, ``<style>`` or
    ``style=`` attributes; tests/security/test_deploy_settings.py checks the templates), so the
    default policy allows nothing inline: an injected script does not run.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policy = settings.QUORUM_CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy
        return response
