"""Routing transfers between sites (stores.transfers holds what a transfer is).

The master holds both halves of every transfer, as it holds all store data. It sends a store's
site, besides master data, the other stores' transactions that concern it: finalised outbound
transfers to it, and the finalised inbound transfers of its own outbounds. Each travels with
its lines (finalised, they no longer change). No other site gets them, the receiving site holds
them as foreign store data that it never pushes back (they arrive marked with the master as
their source), and a push that carries one is refused by the ownership check like any other
store's row.
"""

import uuid

from django.db.models import Q

from stores.models import Transaction, TransactionLine
from stores.transfers import transfers_routed_to

from .changes import ChangeSet, changeset_build
from .models import ChangeAction
from .registry import TABLES_BY_MODEL

TRANSACTIONS = TABLES_BY_MODEL[Transaction].name
LINES = TABLES_BY_MODEL[TransactionLine].name


def transfer_scope(store_id: uuid.UUID) -> Q:
    """The change-log rows of the transfers routed to the site hosting `store_id`."""
    routed = Transaction.objects.filter(transfers_routed_to(store_id)).values("pk")
    return Q(table_name=TRANSACTIONS, record_id__in=routed)


def transfer_lines_add(changeset: ChangeSet, store_id: uuid.UUID) -> None:
    """Add to a pulled page the lines of the other stores' transactions it carries."""
    ids = [uuid.UUID(str(row[0])) for row in changeset.upserts.get(TRANSACTIONS, [])]
    if not ids:
        return
    foreign = Transaction.objects.filter(pk__in=ids).exclude(store_id=store_id).values("pk")
    line_ids = TransactionLine.objects.filter(transaction_id__in=foreign).values_list(
        "pk", flat=True
    )
    lines = changeset_build((LINES, line_id, ChangeAction.UPSERT) for line_id in line_ids)
    rows = changeset.upserts.setdefault(LINES, [])
    carried = {str(row[0]) for row in rows}
    rows.extend(row for row in lines.upserts.get(LINES, []) if str(row[0]) not in carried)
    if not rows:
        del changeset.upserts[LINES]
