from django.urls import path

from annotate import views

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
]
