"""The master's sync API (versioned under /api/sync/v1/): handshake, push, pull and snapshot."""

import time
from typing import Any

from django.db.models import Q
from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from msupply.addresses import client_address

from .auth import SyncAuthentication, SyncCaller, sync_id_of, token_issue
from .changes import ChangeSet, Cursor, changes_last, changes_page
from .errors import ErrorCode, SyncError
from .keys import peer_key_issue
from .models import HeldStatus, PeerState, SyncEndpoint, SyncPeer, SyncPreferences
from .protocol import (
    MAX_PULL_LIMIT,
    PROTOCOL_MIN_VERSION,
    PROTOCOL_VERSION,
    VERSION_HEADER,
    GzipJSONParser,
    version_mismatch,
)
from .prune import pull_expiry_check
from .push import PushRecord, peer_store, push_batch_apply
from .registry import MASTER_DATA_SCOPE, TABLES_BY_NAME
from .rejects import rejected_retry, set_aside_summary, stage_counts
from .selectors import preferences_get
from .services import Exchange, exchange_record
from .snapshot import FIRST, SnapshotPosition, snapshot_page
from .transfers import transfer_lines_add, transfer_scope


class SetAsideSerializer(serializers.Serializer):
    table = serializers.CharField()
    id = serializers.UUIDField()
    reason = serializers.CharField()


class StagesSerializer(serializers.Serializer):
    """A satellite's records by stage, each counted once (sync.rejects.stage_counts)."""

    class HeldSerializer(SetAsideSerializer):
        status = serializers.ChoiceField(choices=HeldStatus.choices)

    to_push = serializers.IntegerField(help_text="The satellite's last report.")
    acknowledged = serializers.IntegerField(help_text="Pushed and acknowledged.")
    integrated = serializers.IntegerField(help_text="Integrated on the master.")
    waiting = serializers.IntegerField(help_text="Waiting for a record set aside.")
    rejected = serializers.IntegerField(help_text="Set aside: the master cannot integrate them.")
    set_aside = HeldSerializer(many=True, help_text="The first records set aside.")


class ChangesField(serializers.JSONField):
    """A changeset: {"upserts": [{"table", "fields", "rows"}], "deletes": [{"table", "ids"}]}."""

    def to_internal_value(self, data: Any) -> Any:
        # The parser has just read it from JSON, and ChangeSet.from_wire checks its shape:
        # JSONField's json.dumps of a whole batch to prove it is JSON was 3% of a push.
        return data


class PushRecordField(serializers.JSONField):
    """A place in a push history: {"generation", "start", "end", "digest"}."""


class SyncAPIView(APIView):
    """Base of the sync endpoints: master only, authenticated satellites, one protocol version."""

    authentication_classes = [SyncAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [GzipJSONParser]
    # Whether the shared enrolment password is enough (the handshake that enrols only).
    enrols = False
    endpoint: SyncEndpoint
    # The answer's field that counts the records this exchange moved, if any.
    records_field = ""
    # Set once the caller is authenticated, for its exchange record.
    peer: SyncPeer | None = None
    # This site's preferences, read once per request.
    preferences: SyncPreferences

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """Answer the request, then record the exchange: after the answer's transactions, so a
        refused or rolled-back request is recorded too, in one INSERT."""
        started_at, clock = timezone.now(), time.monotonic()
        exchange: dict[str, Any] = {}
        try:
            response = super().dispatch(request, *args, **kwargs)
            exchange = self._outcome(response)
        except Exception as error:
            exchange = {
                "error_code": ErrorCode.SERVER_ERROR,
                "message": f"An unexpected {error.__class__.__name__} on the master: see its log.",
            }
            raise
        else:
            return response
        finally:
            exchange_record(
                exchange=Exchange(
                    sync_id=sync_id_of(request),
                    peer=self.peer,
                    endpoint=self.endpoint,
                    started_at=started_at,
                    duration_ms=int((time.monotonic() - clock) * 1000),
                    address=client_address(request),
                    bytes_in=int(request.META.get("CONTENT_LENGTH") or 0),
                    **exchange,
                )
            )

    def _outcome(self, response: HttpResponseBase) -> dict[str, Any]:
        # Rendered now to measure it; Django does not render a response twice.
        if isinstance(response, Response):
            response.render()
        data = getattr(response, "data", None)
        data = data if isinstance(data, dict) else {}
        outcome: dict[str, Any] = {"bytes_out": len(getattr(response, "content", b""))}
        if response.status_code >= 400:
            outcome["error_code"] = str(data.get("code") or f"http_{response.status_code}")
            outcome["message"] = str(data.get("message", ""))
        elif self.records_field:
            outcome["records"] = int(data.get(self.records_field) or 0)
            if data.get("rejected") or data.get("waiting"):
                rejected = data.get("rejected") or []
                outcome.update(
                    error_code=ErrorCode.REJECTED_RECORD,
                    succeeded=True,
                    message=f"Set aside {len(rejected)} record(s) the master could not "
                    f"integrate, and {data.get('waiting') or 0} waiting for them: "
                    + "; ".join(f"{r['table']} {r['id']}: {r['reason']}" for r in rejected),
                )
        return outcome

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        preferences = self.preferences = preferences_get()
        if not preferences.is_master:
            raise SyncError(
                ErrorCode.NOT_MASTER,
                f"This server is satellite {preferences.sync_id}, not the master: point the "
                "Sync with entry at the master's URL.",
            )
        version = request.headers.get(VERSION_HEADER, "")
        if not version.isdigit() or not (PROTOCOL_MIN_VERSION <= int(version) <= PROTOCOL_VERSION):
            raise version_mismatch(version or "none")
        super().initial(request, *args, **kwargs)
        caller = self.caller(request)
        if caller.enrolling and not self.enrols:
            raise SyncError(
                ErrorCode.KEY_REQUIRED,
                "The shared sync password only enrols a satellite: send its key (a handshake "
                "with the password issues one).",
            )
        peer = self.peer = caller.peer
        if not PeerState.objects.filter(peer=peer).update(last_contact_at=timezone.now()):
            PeerState.objects.get_or_create(peer=peer, defaults={"last_contact_at": timezone.now()})

    @staticmethod
    def caller(request: Request) -> SyncCaller:
        caller = request.user
        assert isinstance(caller, SyncCaller)  # noqa: S101 - guaranteed by the authentication
        return caller


class HandshakeView(SyncAPIView):
    """Say who the master is and which store the calling satellite hosts; issue a run token.

    A satellite that enrols with the shared password gets its key instead of a token, and
    shakes hands again with the key (which confirms it) for its token.
    """

    enrols = True
    endpoint = SyncEndpoint.HANDSHAKE

    class InputSerializer(serializers.Serializer):
        sync_id = serializers.IntegerField(min_value=2, max_value=64)
        protocol_version = serializers.IntegerField()
        to_push = serializers.IntegerField(
            min_value=0, required=False, help_text="Records the satellite has still to push."
        )

    class OutputSerializer(serializers.Serializer):
        class StoreSerializer(serializers.Serializer):
            id = serializers.UUIDField()
            code = serializers.CharField()
            name = serializers.CharField()

        sync_id = serializers.IntegerField()
        role = serializers.CharField()
        protocol_min = serializers.IntegerField()
        protocol_max = serializers.IntegerField()
        store = StoreSerializer()
        token = serializers.CharField(allow_blank=True, help_text="Blank when enrolling.")
        key = serializers.CharField(
            required=False, help_text="This satellite's key: only in the answer that enrols it."
        )
        push = PushRecordField(help_text="The last batch the master applied from this satellite.")
        stages = StagesSerializer(help_text="This satellite's records by stage, on the master.")

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller(request)
        if data.validated_data["sync_id"] != caller.sync_id:
            raise SyncError(
                ErrorCode.SYNC_ID_MISMATCH,
                "The Sync ID in the body differs from the one in the header.",
            )
        version = data.validated_data["protocol_version"]
        if not PROTOCOL_MIN_VERSION <= version <= PROTOCOL_VERSION:
            raise version_mismatch(version)
        if "to_push" in data.validated_data:
            PeerState.objects.filter(peer=caller.peer).update(
                records_to_push=data.validated_data["to_push"]
            )
        if not caller.enrolling:
            # Each contact retries what the master set aside: a conflict removed since on the
            # master lets it in now, before the satellite reads the figures.
            rejected_retry(sync_id=caller.sync_id)
        state = PeerState.objects.get(peer=caller.peer)
        result = {
            "sync_id": self.preferences.sync_id,
            "role": "master",
            "protocol_min": PROTOCOL_MIN_VERSION,
            "protocol_max": PROTOCOL_VERSION,
            "store": peer_store(caller.peer),
            "token": "" if caller.enrolling else token_issue(peer=caller.peer),
            "push": PushRecord.of(state).to_wire(),
            "stages": stage_counts(sync_id=caller.sync_id, peer=caller.peer, state=state),
        }
        if caller.enrolling:
            result["key"] = peer_key_issue(peer=caller.peer)
        return Response(self.OutputSerializer(result).data)


class PushView(SyncAPIView):
    """Apply a batch of the satellite's store data atomically, in order and once."""

    endpoint = SyncEndpoint.PUSH
    records_field = "applied"

    class InputSerializer(serializers.Serializer):
        batch_id = serializers.CharField(max_length=64)
        generation = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
        start = serializers.CharField(max_length=41)
        end = serializers.CharField(max_length=41)
        digest = serializers.CharField(max_length=64, allow_blank=True)
        changes = ChangesField()
        to_push = serializers.IntegerField(
            min_value=0,
            required=False,
            help_text="Records the satellite still has to push after this batch.",
        )

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            try:
                data["record"] = PushRecord.from_wire(data)
                data["changeset"] = ChangeSet.from_wire(data["changes"]).decode()
            except ValueError as error:  # WireError included
                raise SyncError(ErrorCode.MALFORMED, str(error)) from error
            if data["record"].end < data["record"].start:
                raise SyncError(ErrorCode.MALFORMED, "The batch ends before it starts.")
            return data

    class OutputSerializer(serializers.Serializer):
        batch_id = serializers.CharField()
        applied = serializers.IntegerField()
        buffered = serializers.IntegerField()
        duplicate = serializers.BooleanField()
        push = PushRecordField()
        rejected = SetAsideSerializer(
            many=True, help_text="Records of this batch the master set aside, with the reason."
        )
        waiting = serializers.IntegerField(
            help_text="Records of this batch waiting for a record the master set aside."
        )
        stages = StagesSerializer()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = push_batch_apply(
            peer=self.caller(request).peer,
            batch_id=data.validated_data["batch_id"],
            record=data.validated_data["record"],
            changeset=data.validated_data["changeset"],
            to_push=data.validated_data.get("to_push"),
        )
        sync_id = self.caller(request).sync_id
        return Response(
            self.OutputSerializer(
                {
                    "batch_id": data.validated_data["batch_id"],
                    "applied": outcome.applied,
                    "buffered": len(outcome.waiting),
                    "duplicate": outcome.duplicate,
                    "push": outcome.record.to_wire(),
                    "rejected": set_aside_summary(outcome.rejected),
                    "waiting": len(outcome.waiting),
                    "stages": stage_counts(sync_id=sync_id),
                }
            ).data
        )


class PullView(SyncAPIView):
    """Master data after a cursor; on initialisation also the satellite's own store data."""

    endpoint = SyncEndpoint.PULL
    records_field = "count"

    class InputSerializer(serializers.Serializer):
        cursor = serializers.CharField(default="0.0")
        limit = serializers.IntegerField(min_value=1, max_value=MAX_PULL_LIMIT, default=2000)
        initial = serializers.BooleanField(default=False)
        store_only = serializers.BooleanField(
            default=False, help_text="Only this satellite's own store data (healing a restore)."
        )

        def validate_cursor(self, value: str) -> Cursor:
            try:
                return Cursor.parse(value)
            except ValueError as error:
                raise serializers.ValidationError(str(error)) from error

    class OutputSerializer(serializers.Serializer):
        changes = ChangesField()
        count = serializers.IntegerField()
        next_cursor = serializers.CharField()
        remaining = serializers.IntegerField()

    @extend_schema(parameters=[InputSerializer], responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        caller = self.caller(request)
        cursor: Cursor = query.validated_data["cursor"]
        pull_expiry_check(peer=caller.peer, cursor=cursor, initial=query.validated_data["initial"])
        # Before the page is read: whatever the log holds now may reach the satellite, so master
        # data in it is deactivated rather than deleted from now on (master_record_may_be_held).
        served = changes_last()
        PeerState.objects.filter(peer=caller.peer).update(
            served_txid=served.txid, served_seq=served.seq
        )
        store_id = peer_store(caller.peer).pk
        # Master data, and the other stores' transfers that concern the satellite's store.
        scope = MASTER_DATA_SCOPE | transfer_scope(store_id)
        if query.validated_data["store_only"]:
            scope = Q(store_id=store_id)
        elif query.validated_data["initial"]:
            scope |= Q(store_id=store_id)
        page = changes_page(cursor, scope, query.validated_data["limit"])
        transfer_lines_add(page.changeset, store_id)
        # The requested cursor is what the satellite has applied: it tells what it still lacks.
        seen: dict[str, Any] = {"pull_txid": cursor.txid, "pull_seq": cursor.seq}
        if page.remaining == 0:
            seen["last_success_at"] = timezone.now()
        PeerState.objects.filter(peer=caller.peer).update(**seen)
        result = {
            "changes": page.changeset.to_wire(),
            "count": len(page.changeset),
            "next_cursor": str(page.end),
            "remaining": page.remaining,
        }
        return Response(self.OutputSerializer(result).data)


class SnapshotView(SyncAPIView):
    """The current rows a satellite initialises from, table by table in primary-key pages.

    The first request (no cursor) starts a snapshot and answers its change-log position and how
    many rows it covers; each later one sends that cursor back with where the last page ended.
    Once done, the satellite pulls the log after the cursor (sync.snapshot).
    """

    endpoint = SyncEndpoint.SNAPSHOT
    records_field = "count"

    class InputSerializer(serializers.Serializer):
        cursor = serializers.CharField(
            required=False,
            help_text="The snapshot's position, from its first page; none starts one.",
        )
        table = serializers.ChoiceField(
            choices=list(TABLES_BY_NAME), required=False, help_text="The table to go on with."
        )
        after = serializers.UUIDField(
            required=False, help_text="The last primary key received in that table."
        )
        limit = serializers.IntegerField(min_value=1, max_value=MAX_PULL_LIMIT, default=2000)

        def validate_cursor(self, value: str) -> Cursor:
            try:
                return Cursor.parse(value)
            except ValueError as error:
                raise serializers.ValidationError(str(error)) from error

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            if "cursor" in data and "table" not in data:
                raise serializers.ValidationError("A snapshot goes on from a table: send table.")
            return data

    class OutputSerializer(serializers.Serializer):
        changes = ChangesField()
        count = serializers.IntegerField()
        cursor = serializers.CharField(help_text="The snapshot's position: pull the log after it.")
        total = serializers.IntegerField(
            allow_null=True, help_text="Rows in scope when the snapshot started (first page only)."
        )
        done = serializers.BooleanField()
        table = serializers.CharField(allow_blank=True, help_text="Where the next page starts.")
        after = serializers.CharField(allow_blank=True, help_text="Blank: the table's start.")

    @extend_schema(parameters=[InputSerializer], responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        peer = self.caller(request).peer
        given = query.validated_data
        page = snapshot_page(
            peer=peer,
            store_id=peer_store(peer).pk,
            start=given.get("cursor"),
            position=SnapshotPosition(given["table"], given.get("after"))
            if "table" in given
            else FIRST,
            limit=given["limit"],
        )
        result = {
            "changes": page.changeset.to_wire(),
            "count": len(page.changeset),
            "cursor": str(page.start),
            "total": page.total,
            "done": page.next is None,
            "table": page.next.table if page.next else "",
            "after": page.next.after.hex if page.next and page.next.after else "",
        }
        return Response(self.OutputSerializer(result).data)
