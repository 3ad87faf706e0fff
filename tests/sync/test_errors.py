"""The one vocabulary of sync errors: every code explained, documented and used as a code."""

import ast
from pathlib import Path

from django.test import Client

from sync.errors import REMEDIES, STATUSES, ErrorCode, SyncError, error_explain
from sync.models import AuthFailure, SyncExchange, SyncLog

SYNC = Path(__file__).resolve().parents[2] / "sync"
RAISERS = {"SyncError", "AuthRefused"}


def test_every_code_has_a_meaning_and_what_to_do() -> None:
    for code in ErrorCode:
        assert code.label, code
        assert code.label != code.value, code
        assert REMEDIES[code].endswith("."), code
        assert error_explain(code) == f"{code.label}. {REMEDIES[code]}"
    assert set(REMEDIES) == set(ErrorCode.values)
    assert set(STATUSES) <= set(ErrorCode.values)


def test_a_code_from_a_newer_release_is_shown_as_it_is() -> None:
    assert error_explain("brand_new_code") == "brand_new_code"
    assert SyncError("brand_new_code").status_code == 500


def test_an_error_without_a_message_says_what_the_code_means() -> None:
    error = SyncError(ErrorCode.LOCKED_OUT)
    assert (error.status_code, error.message) == (429, error_explain(ErrorCode.LOCKED_OUT))
    assert SyncError(ErrorCode.TIMEOUT, "slow").status is None


def test_logs_exchanges_and_auth_failures_filter_by_the_same_codes() -> None:
    for field in (
        SyncLog._meta.get_field("error_code"),
        SyncExchange._meta.get_field("error_code"),
        AuthFailure._meta.get_field("code"),
    ):
        assert [value for value, _ in field.choices or []] == ErrorCode.values, field


def test_the_schema_lists_every_code_and_each_endpoints_error_answers(client: Client) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    error = schema["components"]["schemas"]["SyncError"]
    assert error["properties"]["code"]["enum"] == ErrorCode.values
    for code in ErrorCode.values:
        assert f"`{code}`: {error_explain(code)}" in error["properties"]["code"]["description"]
    push = schema["paths"]["/api/sync/v1/push/"]["post"]["responses"]
    assert "stale_batch" in push["409"]["description"]
    assert push["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/SyncError")
    assert "locked_out" in push["429"]["description"]


def test_every_raised_sync_error_names_its_code_from_the_vocabulary() -> None:
    bare = []
    for path in sorted(SYNC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in RAISERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                bare.append(f"{path.name}:{node.lineno}")
    assert not bare, f"codes given as bare strings, not ErrorCode members: {bare}"
