"""Fixtures shared by the curation tests (the builders live in `tests.curation.builders`)."""

from tests.curation.builders import ranked_export  # noqa: F401
