"""/api/docs works with no network: Swagger UI, its styles and the icon come from this server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_renders_the_api_docs_offline(page, live_server):
    here = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []

    def only_this_server(route):
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto("/api/docs")
    page.wait_for_selector(".swagger-ui .info .title:has-text('Quorum API')")
    page.wait_for_selector(".opblock-summary-path:has-text('/api/projects')")
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon.endswith("favicon.svg")
    assert page.request.get(icon).status == 200
    screenshot(page, "api-docs")
    assert elsewhere == []
