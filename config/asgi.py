import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

from config.security import refuse_development_secret_key  # noqa: E402 (needs Django set up)

refuse_development_secret_key()
