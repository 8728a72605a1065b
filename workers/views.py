"""Pages about reward models: the versions of a project's reward model, side by side."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from curation.views import _project_for
from workers import jobs
from workers.model_training import reward_model_comparison
from workers.models import Job


@login_required
def reward_models(request: HttpRequest, project_id: int) -> HttpResponse:
    """Held-out accuracy per candidate kind, agreement with the human consensus and
    disagreement-flag counts of every version that scored the project; training jobs."""
    project = _project_for(request, project_id, admin=True)
    exports = set(project.dataset_exports.values_list("pk", flat=True))  # once, not per job
    training = [
        job
        for job in Job.objects.filter(name=jobs.TRAIN_REWARD_MODEL).order_by("-id")[:50]
        if job.kwargs.get("export_id") in exports
    ]
    return render(
        request,
        "workers/reward_models.html",
        {
            "project": project,
            "rows": reward_model_comparison(project),
            "training": training,
            "active": "models",
            "is_admin": True,
        },
    )
