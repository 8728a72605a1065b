"""Media permission is decided on the path the file is served from, not on the raw URL."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.factories import add_member, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects():
    """A reviewer of ``mine`` and a file of ``other`` they may not read."""
    mine = make_project(name="mine", n_prompts=1)
    other = make_project(name="other", n_prompts=1)
    reviewer = make_user("rev-mine")
    add_member(mine, reviewer, "reviewer")
    own = default_storage.save(f"p{mine.pk}/aa/own.png", ContentFile(b"own bytes"))
    secret = default_storage.save(f"p{other.pk}/bb/secret.png", ContentFile(b"secret bytes"))
    return {"mine": mine, "other": other, "reviewer": reviewer, "own": own, "secret": secret}


@pytest.mark.parametrize(
    "template",
    [
        "/media/p{mine}/%2e%2e/p{other}/bb/secret.png",
        "/media/p{mine}/%2E%2E/p{other}/bb/secret.png",
        "/media/p{mine}/../p{other}/bb/secret.png",
        "/media/p{mine}/aa/../../p{other}/bb/secret.png",
        "/media/p{mine}/%2e/%2e%2e/p{other}/bb/secret.png",
        "/media/p{mine}/aa%2f..%2f..%2fp{other}/bb/secret.png",
    ],
)
def test_it_refuses_another_projects_file_through_dot_segments(client, two_projects, template):
    client.force_login(two_projects["reviewer"])
    url = template.format(mine=two_projects["mine"].pk, other=two_projects["other"].pk)
    response = client.get(url)
    assert response.status_code == 404
    assert b"secret bytes" not in b"".join(getattr(response, "streaming_content", [b""]))


def test_it_refuses_a_dot_segment_path_even_within_the_same_project(client, two_projects):
    # Stored names are plain relative paths; anything else is not a media name.
    client.force_login(two_projects["reviewer"])
    response = client.get(f"/media/{two_projects['own']}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"own bytes"
    mine = two_projects["mine"].pk
    assert client.get(f"/media/p{mine}/aa/../aa/own.png").status_code == 404


def test_it_refuses_a_symlink_that_leads_into_another_project(client, two_projects, settings):
    from pathlib import Path

    root = Path(settings.MEDIA_ROOT)
    link = root / f"p{two_projects['mine'].pk}" / "aa" / "link.png"
    link.symlink_to(root / two_projects["secret"])
    client.force_login(two_projects["reviewer"])
    assert client.get(f"/media/p{two_projects['mine'].pk}/aa/link.png").status_code == 404


def test_it_serves_staff_the_plain_name_but_not_a_dotted_alias(client, two_projects):
    client.force_login(make_user("staff-sec", staff=True))
    assert client.get(f"/media/{two_projects['secret']}").status_code == 200
    other = two_projects["other"].pk
    assert client.get(f"/media/p{other}/bb/./secret.png").status_code == 404


def test_a_range_is_streamed_and_exact(client, two_projects, settings):
    # A range of a whole file (a video's "bytes=0-") must not be read into memory at once.
    from pathlib import Path

    data = bytes(range(256)) * 4096  # 1 MiB
    name = default_storage.save(f"p{two_projects['mine'].pk}/cc/big.mp4", ContentFile(data))
    assert (Path(settings.MEDIA_ROOT) / name).stat().st_size == len(data)
    client.force_login(two_projects["reviewer"])
    for header, start, end in [
        ("bytes=0-", 0, len(data) - 1),
        ("bytes=1000-300000", 1000, 300000),
        ("bytes=-5000", len(data) - 5000, len(data) - 1),
    ]:
        response = client.get(f"/media/{name}", HTTP_RANGE=header)
        assert response.status_code == 206
        assert response.streaming, header
        body = b"".join(response.streaming_content)
        assert body == data[start : end + 1], header
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert response["Content-Length"] == str(end - start + 1)
    assert client.get(f"/media/{name}", HTTP_RANGE=f"bytes={len(data)}-").status_code == 416
