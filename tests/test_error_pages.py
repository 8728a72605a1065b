"""Error pages and the favicon: styled pages with DEBUG off, never Django's debug or bare ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from tests.factories import add_member, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _debug_off(settings):
    settings.DEBUG = False


def test_it_styles_the_404_page(client, users):
    client.force_login(users["annotator"])
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Nothing here" in body and "/no/such/page/" in body
    assert "css/quorum.css" in body and "favicon.svg" in body
    assert "Using the URLconf" not in body and "Resolver404" not in body


def test_it_styles_the_403_page_with_the_reason(client, users):
    project = make_project(n_prompts=1)
    add_member(project, users["annotator"], "annotator")
    client.force_login(users["annotator"])
    response = client.get(reverse("curation:queue", args=[project.pk]))
    assert response.status_code == 403
    body = response.content.decode()
    assert "You may not open this page" in body
    assert "Your role in this project does not allow this page." in body
    assert "css/quorum.css" in body


def test_it_offers_the_login_on_a_404_to_anonymous_visitors(client):
    body = client.get("/no/such/page/").content.decode()
    assert f"{reverse('login')}?next=/no/such/page/" in body


def test_it_styles_the_500_page_without_a_request_context():
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body and "css/quorum.css" in body


def test_it_serves_a_favicon_at_the_root(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/favicon.ico"
    found = finders.find("favicon.ico")
    assert found and Path(found).read_bytes()[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_it_explains_an_expired_form(users):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["annotator"])
    response = client.post(reverse("logout"))
    assert response.status_code == 403
    body = response.content.decode()
    assert "This form has expired" in body and "css/quorum.css" in body
    assert "CSRF verification failed" not in body
