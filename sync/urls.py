"""URLs of the sync protocol, version 1."""

from django.urls import path

from . import api

app_name = "sync"

urlpatterns = [
    path("handshake/", api.HandshakeView.as_view(), name="handshake"),
    path("push/", api.PushView.as_view(), name="push"),
    path("pull/", api.PullView.as_view(), name="pull"),
    path("snapshot/", api.SnapshotView.as_view(), name="snapshot"),
]
