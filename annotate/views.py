"""Pages of the annotate app. Thin: read through selectors, write through services."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotate import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = selectors.projects_for_user(user=request.user).order_by("name")
    return render(request, "annotate/home.html", {"projects": projects})
