"""Generate the demo data shipped in ``demo/``: ``shop.sqlite`` and the ``lake/`` folder.

The outputs are committed, so ``make run`` shows real metadata without any service. Run this only
to change the demo; it is deterministic (fixed seed, fixed clock), so re-running it with the same
SQLite and pyarrow versions reproduces the same rows::

    .venv/bin/python demo/make_demo.py

Both outputs tell one story, a small web shop: the SQLite database is the operational store, the
lake holds exports of it (CSV, JSON lines, Parquet, and a hive-partitioned Parquet dataset).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20250101
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Margaret",
    "Dennis",
    "Hedy",
    "John",
    "Sophie",
    "Linus",
    "Anita",
    "Niklaus",
    "Adele",
    "Guido",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "Ritchie",
    "Lamarr",
    "Backus",
    "Wilson",
    "Torvalds",
    "Borg",
    "Wirth",
    "Goldberg",
    "van Rossum",
]
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "NL", "SE"]
CATEGORIES = [  # (id, name, parent_id)
    (1, "Electronics", None),
    (2, "Computers", 1),
    (3, "Phones", 1),
    (4, "Home", None),
    (5, "Kitchen", 4),
    (6, "Garden", 4),
    (7, "Books", None),
    (8, "Fiction", 7),
    (9, "Science", 7),
    (10, "Toys", None),
]
STATUSES = ["pending", "paid", "shipped", "cancelled"]
EVENT_TYPES = ["page_view", "add_to_cart", "checkout", "search", "login"]
PAGES = ["/", "/search", "/cart", "/checkout", "/account", "/product/{sku}", "/category/{cat}"]

SCHEMA = """
CREATE TABLE categories (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES categories (id) ON DELETE SET NULL
);

CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    category_id INTEGER NOT NULL REFERENCES categories (id),
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE customers (
    id         INTEGER PRIMARY KEY,
    email      TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    full_name  TEXT GENERATED ALWAYS AS (first_name || ' ' || last_name) VIRTUAL,
    country    TEXT NOT NULL DEFAULT 'US' CHECK (length(country) = 2),
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX ux_customers_email ON customers (lower(email));

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
    ordered_at  TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX ix_orders_customer ON orders (customer_id, ordered_at);
CREATE INDEX ix_orders_open ON orders (ordered_at) WHERE status IN ('pending', 'paid');

CREATE TABLE order_items (
    order_id         INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id       INTEGER NOT NULL REFERENCES products (id),
    quantity         INTEGER NOT NULL DEFAULT 1 CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    line_total_cents INTEGER GENERATED ALWAYS AS (quantity * unit_price_cents) STORED,
    PRIMARY KEY (order_id, product_id)
) WITHOUT ROWID;

CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY,
    product_id  INTEGER NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    customer_id INTEGER REFERENCES customers (id) ON DELETE SET NULL,
    rating      INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body        TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (product_id, customer_id)
);

CREATE VIEW customer_order_totals AS
SELECT c.id                                  AS customer_id,
       c.full_name                           AS full_name,
       count(DISTINCT o.id)                  AS orders,
       coalesce(sum(oi.line_total_cents), 0) AS total_cents
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id AND o.status <> 'cancelled'
LEFT JOIN order_items oi ON oi.order_id = o.id
GROUP BY c.id, c.full_name;
"""


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    first_name: str
    last_name: str
    country: str
    created_at: datetime


@dataclass(frozen=True)
class Product:
    id: int
    sku: str
    name: str
    category_id: int
    price_cents: int


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def make_customers(rng: random.Random, n: int = 200) -> list[Customer]:
    out = []
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}.{i}@example.com".lower().replace(" ", "")
        joined = EPOCH - timedelta(days=rng.randint(0, 900), seconds=rng.randint(0, 86_399))
        out.append(Customer(i, email, first, last, rng.choice(COUNTRIES), joined))
    return out


def make_products(rng: random.Random, n: int = 60) -> list[Product]:
    leaves = [c[0] for c in CATEGORIES if c[2] is not None or c[0] == 10]
    nouns = ["Widget", "Gadget", "Kettle", "Lamp", "Novel", "Atlas", "Phone", "Laptop", "Rake"]
    adjs = ["Classic", "Compact", "Deluxe", "Eco", "Smart", "Pro", "Mini", "Ultra"]
    return [
        Product(
            i,
            f"SKU-{i:04d}",
            f"{rng.choice(adjs)} {rng.choice(nouns)}",
            rng.choice(leaves),
            rng.randint(199, 149_999),
        )
        for i in range(1, n + 1)
    ]


def write_sqlite(rng: random.Random, customers: list[Customer], products: list[Product]) -> Path:
    path = HERE / "shop.sqlite"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO categories VALUES (?, ?, ?)", CATEGORIES)
        conn.executemany(
            "INSERT INTO products (id, sku, name, category_id, price_cents, active, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (p.id, p.sku, p.name, p.category_id, p.price_cents, int(p.id % 13 != 0),
                 _ts(EPOCH - timedelta(days=400 - p.id)))
                for p in products
            ],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO customers (id, email, first_name, last_name, country, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (c.id, c.email, c.first_name, c.last_name, c.country, _ts(c.created_at))
                for c in customers
            ],
        )
        orders, items = [], []
        for oid in range(1, 501):
            when = EPOCH + timedelta(minutes=rng.randint(0, 60 * 24 * 90))
            note = rng.choice([None, None, None, "gift wrap", "leave at door"])
            orders.append((oid, rng.choice(customers).id, rng.choice(STATUSES), _ts(when), note))
            for p in rng.sample(products, rng.randint(1, 4)):
                items.append((oid, p.id, rng.randint(1, 3), p.price_cents))
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", orders)
        conn.executemany(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)"
            " VALUES (?, ?, ?, ?)",
            items,
        )
        pairs = sorted({(rng.choice(products).id, rng.choice(customers).id) for _ in range(200)})
        conn.executemany(
            "INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i, pid, cid, rng.randint(1, 5), rng.choice([None, "Great", "Meh", "Broke"]),
                 _ts(EPOCH + timedelta(hours=i)))
                for i, (pid, cid) in enumerate(pairs, start=1)
            ],
        )  # fmt: skip
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    return path


def write_customers_csv(lake: Path, customers: list[Customer], rng: random.Random) -> None:
    with (lake / "customers.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "email", "first_name", "last_name", "country", "signup_date", "ltv"])
        for c in customers:
            ltv = f"{rng.randint(0, 500_000) / 100:.2f}"
            w.writerow(
                [c.id, c.email, c.first_name, c.last_name, c.country,
                 c.created_at.date().isoformat(), ltv]
            )  # fmt: skip


def write_events_jsonl(lake: Path, customers: list[Customer], rng: random.Random) -> None:
    with (lake / "events.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for i in range(1, 401):
            kind = rng.choice(EVENT_TYPES)
            event = {
                "event_id": i,
                "ts": _ts(EPOCH + timedelta(seconds=37 * i)).replace(" ", "T"),
                "customer_id": rng.choice(customers).id,
                "type": kind,
                "context": {"ip": f"10.0.{i % 256}.{rng.randint(1, 254)}", "mobile": i % 3 == 0},
                "tags": sorted(rng.sample(["new", "promo", "returning", "vip"], rng.randint(0, 2))),
            }
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")


def write_clicks_parquet(lake: Path, customers: list[Customer], rng: random.Random) -> None:
    n = 500
    schema = pa.schema(
        [
            pa.field("click_id", pa.int64(), nullable=False),
            pa.field("clicked_at", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("customer_id", pa.int32()),  # null for anonymous visitors
            pa.field("url", pa.string(), nullable=False),
            pa.field("duration_ms", pa.int32()),
        ]
    )
    pages = [p.format(sku=f"SKU-{i:04d}", cat=i % 10 + 1) for i, p in enumerate(PAGES * 3)]
    table = pa.table(
        {
            "click_id": list(range(1, n + 1)),
            "clicked_at": [EPOCH + timedelta(seconds=11 * i) for i in range(n)],
            "customer_id": [
                rng.choice(customers).id if rng.random() < 0.6 else None for _ in range(n)
            ],
            "url": [rng.choice(pages) for _ in range(n)],
            "duration_ms": [rng.randint(5, 120_000) for _ in range(n)],
        },
        schema=schema,
    )  # fmt: skip
    (lake / "raw").mkdir()
    pq.write_table(table, lake / "raw" / "clicks.parquet")


def write_sales_dataset(
    lake: Path, customers: list[Customer], products: list[Product], rng: random.Random
) -> None:
    schema = pa.schema(
        [
            pa.field("sale_id", pa.int64(), nullable=False),
            pa.field("sold_at", pa.timestamp("ms"), nullable=False),
            pa.field("customer_id", pa.int32(), nullable=False),
            pa.field("sku", pa.string(), nullable=False),
            pa.field("quantity", pa.int16(), nullable=False),
            pa.field("amount", pa.decimal128(10, 2), nullable=False),
            pa.field("coupon", pa.string()),
        ]
    )
    sale_id = 0
    for month, rows in ((1, 240), (2, 210), (3, 260)):
        cols: dict[str, list[object]] = {f.name: [] for f in schema}
        for _ in range(rows):
            sale_id += 1
            p = rng.choice(products)
            qty = rng.randint(1, 3)
            day = datetime(2025, month, rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59))
            cols["sale_id"].append(sale_id)
            cols["sold_at"].append(day)
            cols["customer_id"].append(rng.choice(customers).id)
            cols["sku"].append(p.sku)
            cols["quantity"].append(qty)
            cols["amount"].append(Decimal(qty * p.price_cents) / 100)
            cols["coupon"].append(rng.choice([None, None, None, "SPRING", "WELCOME10"]))
        part = lake / "sales" / "year=2025" / f"month={month}"
        part.mkdir(parents=True)
        pq.write_table(pa.table(cols, schema=schema), part / "part-0.parquet")


def main() -> None:
    rng = random.Random(SEED)
    customers = make_customers(rng)
    products = make_products(rng)
    db = write_sqlite(rng, customers, products)

    lake = HERE / "lake"
    if lake.exists():
        shutil.rmtree(lake)
    lake.mkdir()
    write_customers_csv(lake, customers, rng)
    write_events_jsonl(lake, customers, rng)
    write_clicks_parquet(lake, customers, rng)
    write_sales_dataset(lake, customers, products, rng)

    lake_bytes = sum(p.stat().st_size for p in lake.rglob("*") if p.is_file())
    print(f"{db.relative_to(HERE.parent)}: {db.stat().st_size} bytes")
    print(f"{lake.relative_to(HERE.parent)}/: {lake_bytes} bytes")


if __name__ == "__main__":
    main()
