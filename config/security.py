"""Web-process safeguards: the refusal to serve with the public development key, the CSP and
login throttling.

Kept apart from ``settings.py`` because both act on the web process only: management commands,
Celery workers and the test suite may run on the development key (they sign no cookies), while a
web server that runs on it accepts session cookies anyone can forge from this repository.
"""

from __future__ import annotations

from collections.abc import Callable

from axes.backends import AxesStandaloneBackend
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


# --- login throttling (django-axes) ----------------------------------------------------------
# Failed web, admin and API-token logins are AccessAttempt rows; past QUORUM_LOGIN_FAILURE_LIMIT
# within the cool-off, the account (any client) and the client (any account) are locked out.
# An admin lifts a lockout by deleting its rows (admin: Axes > Access attempts) or with
# `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`.

# Marks the credentials of a bearer-token attempt: a bad token names no account, so it counts
# against the client only.
API_TOKEN_CREDENTIALS = {"api_token": "bearer"}


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' lockout check for logins that come with a request.

    ``authenticate()`` without a request (a shell, the Gradio playground's login) has no client
    to count against: it passes through to the next backend instead of raising.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


PLAYGROUND_CHANNEL = "playground"


def lockout_parameters(request_or_attempt, credentials: dict | None = None) -> list[str]:
    """``AXES_LOCKOUT_PARAMETERS``: per client and, for password logins, per account.

    Logins through the Gradio playground arrive without the client's address (Gradio's login
    callback gets only the credentials): they count per account only, so one person's typos
    cannot lock everyone out of it.
    """
    if credentials and credentials.get("api_token"):
        return ["ip_address"]
    if getattr(request_or_attempt, "quorum_channel", "") == PLAYGROUND_CHANNEL:
        return ["username"]
    return ["ip_address", "username"]


def channel_request(channel: str, path: str) -> HttpRequest:
    """A request standing for a login that reaches Django without one (the playground), so
    that the login throttle counts it."""
    request = HttpRequest()
    request.method = "POST"
    request.path = path
    request.META["REMOTE_ADDR"] = "127.0.0.1"
    request.META["HTTP_USER_AGENT"] = channel
    request.quorum_channel = channel  # type: ignore[attr-defined]
    return request


def client_ip(request: HttpRequest) -> str:
    """``AXES_CLIENT_IP_CALLABLE``: the client as the nearest proxy saw it.

    With ``QUORUM_CLIENT_IP_HEADER`` unset, the peer address. Behind a reverse proxy every peer
    is the proxy, so set it to the header the proxy writes: ``X-Real-IP``, or
    ``X-Forwarded-For``, of which the last entry is the one the proxy appended (the ones before
    it come from the client and are not trusted).
    """
    header = settings.QUORUM_CLIENT_IP_HEADER
    if header:
        value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        last = value.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR", "")


# --- request size ------------------------------------------------------------------------------
# The views that take an import file: their limit is QUORUM_MAX_IMPORT_MB (staff and token
# holders only; the API authenticates before it reads the body).
UPLOAD_VIEWS = {
    "admin:annotate_project_import",
    "setup_upload",  # the set-up's first step (/projects/new/), staff only
    "api:import_into_project",
    "api:import_new_project",
}
# Room for the multipart envelope and the form's other fields around the file.
_MULTIPART_SLACK = 1024 * 1024


class RequestSizeLimitMiddleware:
    """Answers 413 to a body over its limit before anything reads it.

    Django caps only the non-file part of a body (``DATA_UPLOAD_MAX_MEMORY_SIZE``); a multipart
    upload of any size to any page -- the login page included, anonymously -- would be read to
    a temporary file. A body without ``Content-Length`` is never read by Django at all.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse("invalid Content-Length", status=400, content_type="text/plain")
        limit, variable = settings.QUORUM_MAX_REQUEST_BYTES, "QUORUM_MAX_REQUEST_MB"
        view = request.resolver_match.view_name if request.resolver_match else ""
        if view in UPLOAD_VIEWS and (view.startswith("api:") or request.user.is_staff):
            limit = settings.QUORUM_MAX_IMPORT_BYTES + _MULTIPART_SLACK
            variable = "QUORUM_MAX_IMPORT_MB"
        if length > limit:
            return HttpResponse(
                f"request body of {length} bytes is over the limit of {limit} ({variable})",
                status=413,
                content_type="text/plain",
            )
        return None
