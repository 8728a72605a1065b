from django.urls import path

from curation import views
from workers import views as worker_views

app_name = "curation"
urlpatterns = [
    path("", views.index, name="index"),
    path("projects/<int:project_id>/review/", views.queue, name="queue"),
    path("projects/<int:project_id>/review/<str:kind>/", views.queue, name="queue_kind"),
    path("projects/<int:project_id>/flags/<int:flag_id>/", views.flag_detail, name="flag"),
    path(
        "projects/<int:project_id>/flags/<int:flag_id>/dismiss/",
        views.dismiss_flag,
        name="flag_dismiss",
    ),
    path("projects/<int:project_id>/data/", views.browse, name="browse"),
    path("projects/<int:project_id>/data/bulk/", views.browse_bulk, name="browse_bulk"),
    path("projects/<int:project_id>/prompts/<int:prompt_id>/", views.prompt_detail, name="prompt"),
    path(
        "projects/<int:project_id>/prompts/<int:prompt_id>/<str:action>/",
        views.prompt_action,
        name="prompt_action",
    ),
    path("projects/<int:project_id>/annotator/", views.evaluator_detail, name="evaluator"),
    path(
        "projects/<int:project_id>/annotator/mark-unreliable/",
        views.mark_unreliable,
        name="mark_unreliable",
    ),
    path("projects/<int:project_id>/history/", views.history, name="history"),
    path("projects/<int:project_id>/actions/<int:action_id>/undo/", views.undo, name="undo"),
    path("projects/<int:project_id>/dashboard/", views.dashboard, name="dashboard"),
    path("projects/<int:project_id>/recompute/", views.recompute, name="recompute"),
    path("projects/<int:project_id>/exports/", views.exports, name="exports"),
    path(
        "projects/<int:project_id>/reward-models/",
        worker_views.reward_models,
        name="reward_models",
    ),
    path("exports/<int:export_id>/download/", views.export_download, name="export_download"),
    path("exports/<int:export_id>/cancel/", views.export_cancel, name="export_cancel"),
    path("exports/<int:export_id>/datasheet/", views.export_datasheet, name="export_datasheet"),
    path("exports/<int:export_id>/overruled/", views.export_overruled, name="export_overruled"),
    path("exports/<int:export_id>/files/<path:path>", views.export_file, name="export_file"),
]
