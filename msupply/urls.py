"""Root URL configuration."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from sync.views import sync_status_report

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/sync/v1/", include("sync.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The language chooser of the admin and the reports posts here (Django's set_language).
    path("i18n/", include("django.conf.urls.i18n")),
    # The sync app's report sits among the stores' reports, ahead of their include.
    path("reports/sync-status/", sync_status_report, name="sync_status_report"),
    path("reports/", include("stores.urls")),
]
