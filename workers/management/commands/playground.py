import ipaddress

from django.contrib.auth import authenticate
from django.core.management.base import BaseCommand

from config.security import PLAYGROUND_CHANNEL, channel_request


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def staff_login(username: str, password: str) -> bool:
    """Gradio's login check: a staff account, throttled per account like the site's logins
    (the lockout is lifted in the admin, as for any other login)."""
    request = channel_request(PLAYGROUND_CHANNEL, "/playground/login")
    user = authenticate(request=request, username=username, password=password)
    return bool(user is not None and user.is_active and user.is_staff)


class Command(BaseCommand):
    help = (
        "Serve the Gradio reward-model playground (loopback by default; "
        "a staff login is required when it listens on any other address)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=7860)

    def handle(self, *args, host: str, port: int, **opts):
        from workers.playground import build_app

        exposed = not _is_loopback(host)
        app = build_app(require_login=exposed)
        self.stdout.write(
            f"Playground on http://{host}:{port}/" + (" (staff login required)" if exposed else "")
        )
        app.launch(
            server_name=host,
            server_port=port,
            auth=staff_login if exposed else None,
            share=False,
            show_error=True,
        )
