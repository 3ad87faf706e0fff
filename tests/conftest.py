"""Fixtures shared by every test package."""

import pytest

from sync.services import preferences_update


@pytest.fixture
def satellite(db: None) -> int:
    """Make this site satellite 2; returns its sync ID."""
    preferences_update(sync_id=2)
    return 2
