"""OpenAPI schema of the sync API: unique component names and the sync authentication scheme."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from .errors import STATUSES, ErrorCode, error_explain
from .protocol import API_PREFIX, SYNC_ID_HEADER


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


def error_responses_add(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Document the error answer every sync endpoint may give: its component lists each code with
    its meaning and what to do, and each operation names the codes of each HTTP status."""
    result.setdefault("components", {}).setdefault("schemas", {})["SyncError"] = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {
                "type": "string",
                "enum": list(ErrorCode.values),
                "description": "\n".join(
                    f"- `{code}`: {error_explain(code)}" for code in ErrorCode.values
                ),
            },
            "message": {"type": "string", "description": "What went wrong and what to do."},
        },
        "additionalProperties": True,
    }
    by_status: dict[int, list[str]] = {}
    for code, status in STATUSES.items():
        by_status.setdefault(status, []).append(str(code))
    for path, operations in result.get("paths", {}).items():
        if not path.startswith(API_PREFIX):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, codes in sorted(by_status.items()):
                responses[str(status)] = {
                    "description": "Codes: " + ", ".join(codes),
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SyncError"}}
                    },
                }
    return result
