"""A site's everyday user for the convergence test: one JSON action a line in, one answer out.

Run as `python -m tests.convergence_agent` with the site's environment. It sets Django up once
and runs each action through stores.services, so an action costs milliseconds instead of a
`manage.py` start-up. Transactions are named by the handles the harness gives them ("T3"), not
by their random UUIDs, so a logged sequence replays with the same words. Between actions the
agent holds no database connection: no SQLite lock, no PostgreSQL snapshot, no open transaction
while other processes sync.
"""

import datetime
import json
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import django

django.setup()

from django.core.exceptions import PermissionDenied, ValidationError  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from stores import services  # noqa: E402
from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine  # noqa: E402
from sync.selectors import hosted_store_id, site_is_master  # noqa: E402

Action = dict[str, Any]
MASTER_MODELS: dict[str, type[Item] | type[Name]] = {"item": Item, "name": Name}
# Codes a swap parks a record on for a moment; never drawn by the harness.
PARKING_CODE = "~swap"

handles: dict[str, uuid.UUID] = {}


def hosted_store() -> Store:
    if site_is_master():
        return Store.objects.get(code="S001")
    hosted = hosted_store_id()
    if hosted is None:
        raise ValidationError("This satellite has not synced yet: it hosts no store.")
    return Store.objects.get(pk=hosted)


def draft(handle: str) -> Transaction:
    record = Transaction.objects.get(pk=handles[handle])
    if record.status != Transaction.Status.DRAFT:
        raise ValidationError(f"{handle} is finalised: it can no longer be changed.")
    return record


def state(action: Action) -> dict[str, Any]:
    store = hosted_store()
    return {
        "store": store.code,
        "items": list(Item.objects.order_by("code").values_list("code", "active")),
        "names": list(Name.objects.order_by("code").values_list("code", "kind", "active")),
        "stock": [
            [line.item.code, line.batch, line.expiry.isoformat(), line.quantity]
            for line in StockLine.objects.filter(store=store, quantity__gt=0)
            .select_related("item")
            .order_by("item__code", "batch", "expiry")
        ],
    }


def create(action: Action) -> dict[str, Any]:
    record = services.transaction_create(
        store=hosted_store(),
        kind=action["kind"],
        date=datetime.date.fromisoformat(action["date"]),
        name=Name.objects.get(code=action["name"]) if action["name"] else None,
        lines=[
            services.LineInput(
                item=Item.objects.get(code=line["item"]),
                batch=line["batch"],
                expiry=datetime.date.fromisoformat(line["expiry"]),
                quantity=line["quantity"],
            )
            for line in action["lines"]
        ],
    )
    handles[action["tx"]] = record.pk
    return {"id": record.pk.hex, "number": record.number}


@transaction.atomic
def edit_quantity(action: Action) -> dict[str, Any]:
    lines = list(
        TransactionLine.objects.filter(transaction=draft(action["tx"])).order_by(
            "item__code", "batch", "expiry", "quantity", "pk"
        )
    )
    line = lines[action["line"] % len(lines)]
    line.quantity = action["quantity"]
    line.full_clean()
    line.save(update_fields=["quantity"])
    return {}


@transaction.atomic
def edit_date(action: Action) -> dict[str, Any]:
    record = draft(action["tx"])
    record.date = datetime.date.fromisoformat(action["date"])
    record.save(update_fields=["date"])
    return {}


def finalise(action: Action) -> dict[str, Any]:
    services.transaction_finalise(record=Transaction.objects.get(pk=handles[action["tx"]]))
    return {}


@transaction.atomic
def delete(action: Action) -> dict[str, Any]:
    draft(action["tx"]).delete()
    return {}


def item_add(action: Action) -> dict[str, Any]:
    return {
        "id": services.item_create(code=action["code"], name=action["label"], unit="tab").pk.hex
    }


def name_add(action: Action) -> dict[str, Any]:
    record = services.name_create(code=action["code"], name=action["label"], kind=action["kind"])
    return {"id": record.pk.hex}


# Any: master_record_save takes one model at a time (a constrained type), not their union.
def master_record(action: Action, code: str) -> Any:
    return MASTER_MODELS[action["model"]].objects.get(code=code)


def recode(action: Action) -> dict[str, Any]:
    services.master_record_save(record=master_record(action, action["code"]), code=action["new"])
    return {}


@transaction.atomic
def swap(action: Action) -> dict[str, Any]:
    first, second = master_record(action, action["a"]), master_record(action, action["b"])
    services.master_record_save(record=first, code=PARKING_CODE)
    services.master_record_save(record=second, code=action["a"])
    services.master_record_save(record=first, code=action["b"])
    return {}


def deactivate(action: Action) -> dict[str, Any]:
    services.master_record_save(record=master_record(action, action["code"]), active=False)
    return {}


def delete_master(action: Action) -> dict[str, Any]:
    # Deleted, or deactivated when a satellite may hold the record or history points at it.
    return {"result": services.master_record_delete(record=master_record(action, action["code"]))}


OPERATIONS: dict[str, Callable[[Action], dict[str, Any]]] = {
    operation.__name__: operation
    for operation in (
        state, create, edit_quantity, edit_date, finalise, delete,
        item_add, name_add, recode, swap, deactivate, delete_master,
    )
}  # fmt: skip


def answer(action: Action) -> dict[str, Any]:
    """Run one action; a refusal a user would see is `refused`, anything else is `error`."""
    try:
        return {"ok": True, **OPERATIONS[action["op"]](action)}
    except (ValidationError, PermissionDenied) as error:
        return {"ok": False, "refused": " ".join(getattr(error, "messages", [str(error)]))}
    except Exception as error:
        return {
            "ok": False,
            "error": f"{error.__class__.__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
    finally:
        connection.close()


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line)), default=str), flush=True)


if __name__ == "__main__":
    main()
