"""Fixtures shared by every test package."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msupply.i18n import translations_compile
from sync.services import preferences_update


@pytest.fixture
def satellite(db: None) -> int:
    """Make this site satellite 2; returns its sync ID."""
    preferences_update(sync_id=2)
    return 2


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright; the test is skipped where either is missing.

    Playwright's sync API keeps an event loop running in the test thread, so Django is told that
    ORM calls from this thread are fine for as long as the browser lives.
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def pytest_configure(config: pytest.Config) -> None:
    """Compile the translations, as bin/setup does, so a changed .po is what the tests see."""
    translations_compile()
