"""OpenAPI schema of the sync API: unique component names and the sync authentication scheme."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from .protocol import SYNC_ID_HEADER


class SyncAutoSchema(AutoSchema):
    """Names a serializer nested in a view or serializer after its owners too.

    Every sync view has an InputSerializer and an OutputSerializer; named by class alone they
    would collide as "Input" and "Output" and give a wrong schema.
    """

    def get_serializer_name(self, serializer: serializers.Serializer, direction: Any) -> str:
        owners, _, own = type(serializer).__qualname__.rpartition(".")
        prefix = "".join(
            owner.removesuffix("View").removesuffix("Serializer")
            for owner in owners.split(".")
            if owner and owner != "<locals>"
        )
        return prefix + own


class SyncAuthenticationScheme(OpenApiAuthenticationExtension):
    """The Sync ID header with the sync password (handshake) or the run token (the rest)."""

    target_class = "sync.auth.SyncAuthentication"
    name = ["syncId", "syncPassword", "syncToken"]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, str]]:
        return [
            {"type": "apiKey", "in": "header", "name": SYNC_ID_HEADER},
            {"type": "http", "scheme": "basic"},
            {"type": "http", "scheme": "bearer"},
        ]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list[Any]]]:
        return [{"syncId": [], "syncPassword": []}, {"syncId": [], "syncToken": []}]
