"""REST endpoints of the curation app, mounted under ``/api/`` by ``annotate.api``."""

from ninja import Router

router = Router(tags=["curation"])
