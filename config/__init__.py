"""Quorum's Django project. Importing it loads the one Celery app, so every process -- web,
management commands and workers -- publishes to the configured broker."""

from config.celery import app as celery_app

__all__ = ("celery_app",)
