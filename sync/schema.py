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
    """The Sync ID header with the satellite's key, its run token, or the shared password (which
    only enrols, in a handshake): see sync.auth."""

    target_class = "sync.auth.SyncAuthentication"
    name = ["syncId", "syncKey", "syncToken", "syncPassword"]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, str]]:
        return [
            {"type": "apiKey", "in": "header", "name": SYNC_ID_HEADER},
            {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Key <the satellite's key>",
            },
            {"type": "http", "scheme": "bearer"},
            {"type": "http", "scheme": "basic"},
        ]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list[Any]]]:
        return [
            {"syncId": [], "syncKey": []},
            {"syncId": [], "syncToken": []},
            {"syncId": [], "syncPassword": []},
        ]
