import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from config.security import refuse_development_secret_key  # noqa: E402 (needs Django set up)

refuse_development_secret_key()
