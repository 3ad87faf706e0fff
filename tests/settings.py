"""Settings of the test process: the project's, in development mode, without collectstatic."""

import os

# The test process is a development process and says so: plain HTTP and the development key.
# pytest-django still runs every test with DEBUG off. Servers the tests start get their own
# environment from msupply.sites.
os.environ.setdefault("DEBUG", "true")

from msupply.settings import *  # noqa: E402

# Pages are rendered without collectstatic having run: plain names, found in the apps' folders.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
