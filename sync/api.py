"""The master's sync API (versioned under /api/sync/v1/): handshake, push and pull."""

from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from stores.models import Store

from .auth import SyncAuthentication, SyncCaller, token_issue
from .changes import ChangeSet, Cursor, WireError, changes_last, changes_page
from .integration import OwnershipError, changeset_apply, changeset_check_ownership
from .models import AppliedBatch, PeerState, SyncPeer
from .protocol import (
    MAX_PULL_LIMIT,
    PROTOCOL_MIN_VERSION,
    PROTOCOL_VERSION,
    VERSION_HEADER,
    GzipJSONParser,
    SyncAPIError,
    version_mismatch,
)
from .registry import MASTER_DATA_SCOPE
from .selectors import preferences_get


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ChangesField(serializers.JSONField):
    """A changeset: {"upserts": [{"table", "fields", "rows"}], "deletes": [{"table", "ids"}]}."""


def peer_store(peer: SyncPeer) -> Store:
    """The master's store that `peer` hosts, as the Sync with list names it."""
    store = Store.objects.filter(code=peer.store_code).first()
    if store is None:
        raise SyncAPIError(
            f"The master's Sync with entry for Sync ID {peer.sync_id} names store "
            f"{peer.store_code!r}, which does not exist on the master: fix the entry there.",
            "store_missing",
            status.HTTP_409_CONFLICT,
        )
    return store


class SyncAPIView(APIView):
    """Base of the sync endpoints: master only, authenticated satellites, one protocol version."""

    authentication_classes = [SyncAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [GzipJSONParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        preferences = preferences_get()
        if not preferences.is_master:
            raise SyncAPIError(
                f"This server is satellite {preferences.sync_id}, not the master: point the "
                "Sync with entry at the master's URL.",
                "not_master",
                status.HTTP_409_CONFLICT,
            )
        version = request.headers.get(VERSION_HEADER, "")
        if not version.isdigit() or not (PROTOCOL_MIN_VERSION <= int(version) <= PROTOCOL_VERSION):
            raise version_mismatch(version or "none")
        super().initial(request, *args, **kwargs)
        peer = self.caller(request).peer
        if not PeerState.objects.filter(peer=peer).update(last_contact_at=timezone.now()):
            PeerState.objects.get_or_create(peer=peer, defaults={"last_contact_at": timezone.now()})

    @staticmethod
    def caller(request: Request) -> SyncCaller:
        caller = request.user
        assert isinstance(caller, SyncCaller)  # noqa: S101 - guaranteed by the authentication
        return caller


class HandshakeView(SyncAPIView):
    """Say who the master is and which store the calling satellite hosts; issue a run token."""

    class InputSerializer(serializers.Serializer):
        sync_id = serializers.IntegerField(min_value=2, max_value=64)
        protocol_version = serializers.IntegerField()

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
        token = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 401: ErrorSerializer, 409: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller(request)
        if data.validated_data["sync_id"] != caller.sync_id:
            raise SyncAPIError(
                "The Sync ID in the body differs from the one in the header.",
                "sync_id_mismatch",
                status.HTTP_400_BAD_REQUEST,
            )
        version = data.validated_data["protocol_version"]
        if not PROTOCOL_MIN_VERSION <= version <= PROTOCOL_VERSION:
            raise version_mismatch(version)
        result = {
            "sync_id": preferences_get().sync_id,
            "role": "master",
            "protocol_min": PROTOCOL_MIN_VERSION,
            "protocol_max": PROTOCOL_VERSION,
            "store": peer_store(caller.peer),
            "token": token_issue(sync_id=caller.sync_id),
        }
        return Response(self.OutputSerializer(result).data)


class PushView(SyncAPIView):
    """Apply a batch of the satellite's store data atomically and idempotently."""

    class InputSerializer(serializers.Serializer):
        batch_id = serializers.CharField(max_length=64)
        changes = ChangesField()

    class OutputSerializer(serializers.Serializer):
        batch_id = serializers.CharField()
        applied = serializers.IntegerField()
        buffered = serializers.IntegerField()
        duplicate = serializers.BooleanField()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            409: ErrorSerializer,
            413: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller(request)
        batch_id = data.validated_data["batch_id"]
        try:
            changeset = ChangeSet.from_wire(data.validated_data["changes"])
        except WireError as error:
            raise SyncAPIError(str(error), "malformed", status.HTTP_400_BAD_REQUEST) from error
        store = peer_store(caller.peer)
        with transaction.atomic(durable=True):
            # One integration at a time per satellite: the row lock queues its retries.
            state = PeerState.objects.select_for_update().get(peer=caller.peer)
            result = {"batch_id": batch_id, "applied": 0, "buffered": 0, "duplicate": True}
            if not AppliedBatch.objects.filter(sync_id=caller.sync_id, batch_id=batch_id).exists():
                try:
                    changeset_check_ownership(changeset=changeset, store_id=store.pk)
                except OwnershipError as error:
                    raise SyncAPIError(str(error), "forbidden_record", 403) from error
                except WireError as error:
                    raise SyncAPIError(str(error), "malformed", 400) from error
                try:
                    applied = changeset_apply(changeset=changeset, source_site=caller.sync_id)
                except DatabaseError as error:
                    # A row the master's constraints refuse (a zero quantity, a transaction
                    # number taken twice) needs a typed answer: a satellite reads a 500 page as
                    # a wrong URL.
                    raise SyncAPIError(
                        f"The master refused a record of this batch: {error}. Correct it on the "
                        "satellite; the batch is retried at the next sync.",
                        "rejected_record",
                        status.HTTP_409_CONFLICT,
                    ) from error
                AppliedBatch.objects.create(
                    sync_id=caller.sync_id, batch_id=batch_id, records=len(changeset)
                )
                state.records_received += len(changeset)
                state.save(update_fields=["records_received"])
                result.update(applied=applied.applied, buffered=applied.buffered, duplicate=False)
        return Response(self.OutputSerializer(result).data)


class PullView(SyncAPIView):
    """Master data after a cursor; on initialisation also the satellite's own store data."""

    class InputSerializer(serializers.Serializer):
        cursor = serializers.CharField(default="0.0")
        limit = serializers.IntegerField(min_value=1, max_value=MAX_PULL_LIMIT, default=2000)
        initial = serializers.BooleanField(default=False)

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
        # Before the page is read: whatever the log holds now may reach the satellite, so master
        # data in it is deactivated rather than deleted from now on (master_record_may_be_held).
        served = changes_last()
        PeerState.objects.filter(peer=caller.peer).update(
            served_txid=served.txid, served_seq=served.seq
        )
        scope = MASTER_DATA_SCOPE
        if query.validated_data["initial"]:
            scope |= Q(store_id=peer_store(caller.peer).pk)
        page = changes_page(cursor, scope, query.validated_data["limit"])
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
