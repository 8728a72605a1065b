"""Fixtures shared by the curation tests (the builders live in `tests.curation.builders`)."""

import pytest

from tests.curation.builders import ranked_export  # noqa: F401


@pytest.fixture
def _data_dir(settings, tmp_path):
    """DATA_DIR (where exports are written) in the test's own folder; a module that builds
    exports uses it for every test with ``pytest.mark.usefixtures("_data_dir")``."""
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR
