"""Realistic demo master data: stores, medicines with units, customers and suppliers."""

import itertools
from collections.abc import Iterator

from .models import Item, Name, Store

STORE_PLACES = [
    "Central Medical Store",
    "Northern Regional Warehouse",
    "Southern Regional Warehouse",
    "District Hospital Pharmacy",
    "Eastern Health Centre",
    "Western Health Centre",
    "Island Clinic",
    "Mountain Clinic",
    "Coastal Clinic",
    "Valley Health Post",
]

MEDICINES = [
    ("Amoxicillin", ["250 mg", "500 mg"], "capsule"),
    ("Paracetamol", ["500 mg", "120 mg/5 mL"], "tablet"),
    ("Ibuprofen", ["200 mg", "400 mg"], "tablet"),
    ("Metformin", ["500 mg", "850 mg"], "tablet"),
    ("Amlodipine", ["5 mg", "10 mg"], "tablet"),
    ("Artemether/Lumefantrine", ["20/120 mg"], "tablet"),
    ("Oral rehydration salts", ["20.5 g"], "sachet"),
    ("Zinc sulfate", ["20 mg"], "tablet"),
    ("Ceftriaxone", ["1 g", "250 mg"], "vial"),
    ("Oxytocin", ["10 IU/mL"], "ampoule"),
    ("Magnesium sulfate", ["50%"], "ampoule"),
    ("Gentamicin", ["40 mg/mL"], "ampoule"),
    ("Salbutamol", ["100 mcg"], "inhaler"),
    ("Cotrimoxazole", ["480 mg", "240 mg/5 mL"], "tablet"),
    ("Ferrous sulfate + folic acid", ["200/0.4 mg"], "tablet"),
    ("Tetracycline eye ointment", ["1%"], "tube"),
    ("Lidocaine", ["2%"], "vial"),
    ("Sodium chloride infusion", ["0.9% 1 L"], "bottle"),
    ("Glucose infusion", ["5% 500 mL"], "bottle"),
    ("Insulin, soluble", ["100 IU/mL"], "vial"),
    ("Enalapril", ["5 mg", "20 mg"], "tablet"),
    ("Doxycycline", ["100 mg"], "capsule"),
    ("Fluconazole", ["150 mg"], "capsule"),
    ("Omeprazole", ["20 mg"], "capsule"),
    ("Prednisolone", ["5 mg"], "tablet"),
    ("Diazepam", ["5 mg/mL"], "ampoule"),
    ("Measles vaccine", ["10 dose"], "vial"),
    ("Examination gloves", ["medium"], "box"),
    ("Syringe, disposable", ["5 mL"], "each"),
    ("Rapid diagnostic test, malaria", ["Pf/Pan"], "test"),
]
PACK_SIZES = ["", " x100", " x1000", " x10", " x50"]

CUSTOMER_KINDS = ["Health Centre", "Clinic", "Hospital Ward", "Dispensary", "Health Post"]
SUPPLIER_NAMES = [
    "Pharma Wholesale",
    "Medical Supplies Ltd",
    "Generic Medicines Co",
    "Health Logistics",
    "Essential Drugs Agency",
    "Regional Distributor",
]
PLACES = [
    "Akan",
    "Balu",
    "Coro",
    "Dara",
    "Elim",
    "Fana",
    "Gora",
    "Hilo",
    "Iva",
    "Juba",
    "Kola",
    "Lumo",
    "Mara",
    "Nuku",
    "Ora",
    "Pala",
    "Rua",
    "Sefa",
    "Tamu",
    "Vava",
]


def demo_stores(count: int) -> Iterator[Store]:
    """Yield `count` stores with stable codes S001, S002, ..."""
    for number in range(1, count + 1):
        place = STORE_PLACES[(number - 1) % len(STORE_PLACES)]
        suffix = "" if number <= len(STORE_PLACES) else f" {number}"
        yield Store(code=f"S{number:03d}", name=f"{place}{suffix}")


def demo_items(count: int) -> Iterator[Item]:
    """Yield `count` medicines and supplies with stable codes and their units."""
    variants = itertools.cycle(
        (name, strength, unit, pack)
        for pack in PACK_SIZES
        for name, strengths, unit in MEDICINES
        for strength in strengths
    )
    for number, (name, strength, unit, pack) in zip(range(1, count + 1), variants, strict=False):
        yield Item(code=f"I{number:05d}", name=f"{name} {strength}{pack}", unit=unit)


def demo_names(count: int) -> Iterator[Name]:
    """Yield `count` parties, about one supplier for every four customers."""
    for number in range(1, count + 1):
        place = PLACES[number % len(PLACES)]
        if number % 5 == 0:
            supplier = SUPPLIER_NAMES[(number // 5) % len(SUPPLIER_NAMES)]
            yield Name(code=f"N{number:05d}", name=f"{place} {supplier}", kind=Name.Kind.SUPPLIER)
        else:
            kind = CUSTOMER_KINDS[number % len(CUSTOMER_KINDS)]
            yield Name(
                code=f"N{number:05d}", name=f"{place} {kind} {number}", kind=Name.Kind.CUSTOMER
            )


LINES_PER_TRANSACTION = 10


def demo_transactions(
    *, store: Store, count: int, items: list[Item], names: list[Name], seed: int = 1
) -> int:
    """Create and finalise `count` realistic transactions for `store` through the services.

    Two in three receive goods from a supplier; the rest issue part of what is on hand to a
    customer, so stock never goes negative. Returns how many were created.
    """
    import datetime
    import random
    from decimal import Decimal

    from django.utils import timezone

    from . import services
    from .models import StockLine, Transaction

    rng = random.Random(f"{store.code}-{seed}")  # noqa: S311 - demo data, not security
    suppliers = [name for name in names if name.kind == Name.Kind.SUPPLIER] or names
    customers = [name for name in names if name.kind == Name.Kind.CUSTOMER] or names
    today = timezone.localdate()
    for number in range(count):
        on_hand = list(
            StockLine.objects.filter(store=store, quantity__gt=1).order_by("?")[
                :LINES_PER_TRANSACTION
            ]
        )
        if number % 3 == 2 and on_hand:
            kind, name = Transaction.Kind.CUSTOMER_INVOICE, rng.choice(customers)
            lines = [
                services.LineInput(
                    item=stock.item,
                    batch=stock.batch,
                    expiry=stock.expiry,
                    quantity=rng.randint(1, stock.quantity // 2),
                    sell_price=Decimal(rng.randint(10, 500)) / 100,
                )
                for stock in on_hand
            ]
        else:
            kind, name = Transaction.Kind.SUPPLIER_INVOICE, rng.choice(suppliers)
            lines = [
                services.LineInput(
                    item=item,
                    batch=f"{store.code}-{number}-{index}",
                    expiry=today + datetime.timedelta(days=rng.randint(30, 1000)),
                    quantity=rng.randint(10, 1000),
                    cost_price=Decimal(rng.randint(5, 300)) / 100,
                )
                for index, item in enumerate(
                    rng.sample(items, min(len(items), LINES_PER_TRANSACTION))
                )
            ]
        date = today - datetime.timedelta(days=count - number)
        record = services.transaction_create(
            store=store, kind=kind, date=date, lines=lines, name=name
        )
        services.transaction_finalise(record=record)
    return count
