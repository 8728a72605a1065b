"""Celery tasks of the curation app (flags, exports). Thin: fetch by id -> call a service."""
