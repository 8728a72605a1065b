from django.urls import path  # noqa: F401  (curation pages are added here)

app_name = "curation"
urlpatterns: list = []
