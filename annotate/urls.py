from django.urls import path

from annotate import setup_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<int:project_id>/annotate/", views.work, name="annotate_work"),
    path(
        "projects/<int:project_id>/assignments/<int:assignment_id>/submit/",
        views.submit,
        name="annotate_submit",
    ),
    path(
        "projects/<int:project_id>/assignments/<int:assignment_id>/skip/",
        views.skip,
        name="annotate_skip",
    ),
    path(
        "projects/<int:project_id>/judgments/<int:judgment_id>/edit/",
        views.edit,
        name="annotate_edit",
    ),
    path(
        "projects/<int:project_id>/judgments/<int:judgment_id>/revise/",
        views.revise,
        name="annotate_revise",
    ),
    path(
        "projects/<int:project_id>/instructions/", views.instructions, name="annotate_instructions"
    ),
    path("projects/new/", setup_views.upload, name="setup_upload"),
    path("projects/new/<slug:draft_id>/", setup_views.preview, name="setup_preview"),
    path(
        "projects/new/<slug:draft_id>/settings/", setup_views.settings_step, name="setup_settings"
    ),
    path("projects/new/<slug:draft_id>/members/", setup_views.members, name="setup_members"),
    path("projects/new/<slug:draft_id>/start/", setup_views.start, name="setup_start"),
    path("projects/new/<slug:draft_id>/cancel/", setup_views.cancel, name="setup_cancel"),
    path("projects/<int:project_id>/ready/", setup_views.ready, name="setup_ready"),
    path("projects/<int:project_id>/ready/discard/", setup_views.discard, name="setup_discard"),
    path(
        "projects/<int:project_id>/members/",
        setup_views.project_members,
        name="setup_project_members",
    ),
    path(
        "projects/<int:project_id>/settings/",
        setup_views.project_settings,
        name="setup_project_settings",
    ),
]
