"""The top bar links to the Django admin only for people it has something to show."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

pytestmark = pytest.mark.django_db

ADMIN_LINK = f'<a href="{reverse("admin:index")}">Admin</a>'


def _home(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return response.content.decode()


def _user(name: str, **flags):
    return get_user_model().objects.create_user(username=name, password="pw-quorum-1", **flags)


def test_a_superuser_sees_the_admin_link(client):
    assert ADMIN_LINK in _home(client, _user("root", is_staff=True, is_superuser=True))


def test_staff_without_admin_rights_do_not(client):
    """Such staff create projects on Quorum's own set-up pages; the admin would show nothing."""
    assert ADMIN_LINK not in _home(client, _user("lead", is_staff=True))


def test_staff_given_an_admin_right_do(client):
    user = _user("editor", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_datasetexport"))
    assert ADMIN_LINK in _home(client, user)


def test_an_annotator_does_not(client):
    assert ADMIN_LINK not in _home(client, _user("ann"))
