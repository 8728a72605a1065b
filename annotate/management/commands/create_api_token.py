from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotate.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (shown once; only a digest is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="")

    def handle(self, *args, username: str, name: str, **opts):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        _token, key = api_token_create(user=user, name=name)
        self.stdout.write(key)
