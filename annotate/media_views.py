"""Serves uploaded media with a permission check and HTTP Range support (video seeking)."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from annotate.models import Candidate, Membership, Prompt

_PROJECT_PREFIX = re.compile(r"^p(\d+)/")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _user_may_see(user, name: str) -> bool:
    match = _PROJECT_PREFIX.match(name)
    if match is None:
        return bool(user.is_staff)
    project_id = int(match.group(1))
    if user.is_staff:
        return True
    role = (
        Membership.objects.filter(user=user, project_id=project_id)
        .values_list("role", flat=True)
        .first()
    )
    if role in ("admin", "reviewer"):
        return True
    if role != "annotator":
        return False
    # Annotators see media of the tasks they were assigned, nothing else.
    return (
        Candidate.objects.filter(
            project_id=project_id, media=name, tasks__assignments__annotator=user
        ).exists()
        or Prompt.objects.filter(project_id=project_id, tasks__assignments__annotator=user)
        .filter(Q(image=name) | Q(video=name))
        .exists()
    )


def _resolved_media(path: str) -> tuple[Path, str]:
    """The file ``path`` names under MEDIA_ROOT and its normalised name, or 404.

    Permission is decided on the returned name, never on the raw URL: the URL is decoded before
    it reaches the view, so ``p1/%2e%2e/p2/x.png`` arrives as ``p1/../p2/x.png``, whose raw
    prefix names another project than the file it resolves to. A path that does not normalise to
    itself (``..``, ``.``, ``//``) or that resolves elsewhere (a symlink) is refused outright:
    stored media names are always plain relative paths.
    """
    name = posixpath.normpath(path)
    if name != path or name.startswith(("/", "..")) or "\\" in name:
        raise Http404("no such media")
    root = Path(settings.MEDIA_ROOT).resolve()
    target = (root / name).resolve()
    if root not in target.parents or not target.is_file():
        raise Http404("no such media")
    if target.relative_to(root).as_posix() != name:
        raise Http404("no such media")
    return target, name


def _file_range(path: Path, start: int, length: int, step: int = 256 * 1024) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, a step at a time: a range of a whole video
    (``bytes=0-``) is streamed, not read into memory."""
    with open(path, "rb") as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(step, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


@require_GET
@login_required
def serve_media(request: HttpRequest, path: str) -> HttpResponse:
    target, name = _resolved_media(path)
    if not _user_may_see(request.user, name):
        raise Http404("no such media")  # 404, not 403: do not reveal that it exists
    size = target.stat().st_size
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    match = _RANGE.match(request.headers.get("Range", ""))
    if match and (match.group(1) or match.group(2)):
        start_s, end_s = match.groups()
        if start_s:
            start = int(start_s)
            end = min(int(end_s), size - 1) if end_s else size - 1
        else:
            start, end = max(0, size - int(end_s)), size - 1
        if start > end or start >= size:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        response = StreamingHttpResponse(
            _file_range(target, start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    else:
        response = FileResponse(open(target, "rb"), content_type=content_type)  # noqa: SIM115 (FileResponse closes it)
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response
