"""``python -m bench.risk``: fraud-scoring latency on a ledger of realistic size, with query plans.

Creates a throw-away ledger (a fresh PostgreSQL database by default, ``--sqlite`` for a SQLite
file), migrates it to head, bulk-loads 100,000 payments over 10,000 customers (COPY on
PostgreSQL, executemany on SQLite), then scores 1,000 new payments through the real
``score_risk`` activity and prints p50/p95/p99 latency and the plan of the scoring statement.
The database is dropped (the file deleted) at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import ClauseElement, Engine, Executable, insert, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from temporalio.testing import ActivityEnvironment

from activities.risk import RiskActivities, RiskRules
from ledger import risk as queries
from ledger.engine import create_ledger_engine, session_factory
from ledger.migrate import upgrade
from ledger.models import Payment, utcnow
from workflows.contract import PaymentRequest, PaymentStatus, RiskAssessment, RiskContext, RiskInput

ADMIN_DSN = os.environ.get("PAYTIDE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MERCHANT = "bench"
COUNTRIES = ["FR", "DE", "ES", "IT", "NL", "BE", "PT", "IE", "US", "GB", "BR", "JP"]
CURRENCIES = ["EUR"] * 8 + ["USD", "GBP", "JPY"]
DECLINES = ["card_declined", "insufficient_funds", "do_not_honor", "refused_14"]
BURST_CUSTOMERS = 100
BURST_PAYMENTS = 8
COLUMNS = (
    "id merchant_id idempotency_key fingerprint workflow_id status amount_minor currency "
    "customer_id order_id payment_method metadata capture_method risk_factors device_id country "
    "failure_code last_seq created_at updated_at"
).split()


# ---- EXPLAIN as a statement, so bound parameters go through the normal type processing ----


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain_postgresql(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + compiler.process(element.statement, **kw)


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.statement, **kw)


# ---- The ledger --------------------------------------------------------------------------------


@contextmanager
def postgres_ledger() -> Iterator[Engine]:
    name = f"paytide_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    engine = create_ledger_engine(f"{base}/{name}")
    print(f"created PostgreSQL database {name}", flush=True)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped {name}", flush=True)


@contextmanager
def sqlite_ledger() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="paytide-bench-") as folder:
        path = Path(folder) / "ledger.db"
        engine = create_ledger_engine(f"sqlite:///{path}")
        print(f"created SQLite ledger {path}", flush=True)
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()
            print("deleted the SQLite ledger", flush=True)


@dataclass(frozen=True)
class Customer:
    id: str
    methods: tuple[str, ...]
    devices: tuple[str, ...]
    countries: tuple[str, ...]
    currency: str
    typical_minor: int


def make_customers(count: int, rng: random.Random) -> list[Customer]:
    customers = []
    for index in range(count):
        currency = rng.choice(CURRENCIES)
        typical = rng.randint(5, 300) * (1 if currency == "JPY" else 100)
        customers.append(
            Customer(
                id=f"cus_{index:06d}",
                methods=tuple(f"pm_{index:06d}_{n}" for n in range(rng.choice((1, 1, 2)))),
                devices=tuple(f"dev_{index:06d}_{n}" for n in range(rng.choice((1, 1, 2, 3)))),
                countries=tuple(rng.sample(COUNTRIES[:8], rng.choice((1, 1, 1, 2)))),
                currency=currency,
                typical_minor=typical,
            )
        )
    return customers


def history_rows(
    customers: list[Customer], payments: int, now: datetime, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """Thirty days of payments, 5% of them in the last hour so every window has rows to count.

    ``customers[0]`` is a heavy customer (a shared guest account: 5% of all rows) and the next
    100 are mid-attack: eight tiny declined payments on one card in the last five minutes.
    """
    heavy, attacked = customers[0], customers[1 : 1 + BURST_CUSTOMERS]
    plan = [(heavy, False)] * (payments // 20)
    plan += [(customer, True) for customer in attacked for _ in range(BURST_PAYMENTS)]
    others = customers[1:]
    plan += [(others[n % len(others)], False) for n in range(payments - len(plan))]
    for number, (customer, burst) in enumerate(plan):
        if burst:
            yield _burst_row(customer, number, now, rng)
            continue
        if rng.random() < 0.05:
            created = now - timedelta(seconds=rng.uniform(0, 3600))
        else:
            created = now - timedelta(seconds=rng.uniform(3600, 30 * 86400))
        roll = rng.random()
        status, failure = PaymentStatus.SUCCEEDED.value, None
        if roll < 0.08:
            status, failure = PaymentStatus.FAILED.value, rng.choice(DECLINES)
        elif roll < 0.10:
            status, failure = PaymentStatus.FAILED.value, "processing_error"
        elif roll < 0.12:
            status = PaymentStatus.BLOCKED.value
        key = f"hist_{number:07d}"
        amount = max(1, int(customer.typical_minor * rng.uniform(0.2, 2.5)))
        yield (
            f"pay_{key}",
            MERCHANT,
            key,
            key,
            f"payment:{MERCHANT}:{key}",
            status,
            amount,
            customer.currency,
            customer.id,
            f"order_{key}",
            rng.choice(customer.methods),
            "{}",
            "automatic",
            "[]",
            rng.choice(customer.devices) if rng.random() < 0.9 else None,
            rng.choice(customer.countries) if rng.random() < 0.95 else None,
            failure,
            3,
            created,
            created,
        )


def _burst_row(
    customer: Customer, number: int, now: datetime, rng: random.Random
) -> tuple[Any, ...]:
    created = now - timedelta(seconds=rng.uniform(0, 280))
    key = f"hist_{number:07d}"
    return (
        f"pay_{key}",
        MERCHANT,
        key,
        key,
        f"payment:{MERCHANT}:{key}",
        PaymentStatus.FAILED.value,
        1 if customer.currency == "JPY" else 100,
        customer.currency,
        customer.id,
        f"order_{key}",
        customer.methods[0],
        "{}",
        "automatic",
        "[]",
        customer.devices[0],
        customer.countries[0],
        rng.choice(DECLINES),
        3,
        created,
        created,
    )


def load(engine: Engine, rows: Iterator[tuple[Any, ...]], total: int) -> float:
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            statement = f"COPY payments ({', '.join(COLUMNS)}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for done, row in enumerate(rows, 1):
                    copy.write_row(row)
                    if done % 20_000 == 0:
                        print(f"  copied {done:,}/{total:,}", flush=True)
            raw.commit()
        finally:
            raw.close()
        with engine.begin() as connection:
            connection.execute(text("ANALYZE payments"))
    else:
        batch: list[dict[str, Any]] = []
        done = 0
        with engine.begin() as connection:
            for row in rows:
                values = dict(zip(COLUMNS, row, strict=True))
                values["metadata"], values["risk_factors"] = {}, []
                batch.append(values)
                if len(batch) == 10_000:
                    connection.execute(insert(Payment.__table__), batch)  # type: ignore[attr-defined]
                    done += len(batch)
                    batch.clear()
                    print(f"  inserted {done:,}/{total:,}", flush=True)
            if batch:
                connection.execute(insert(Payment.__table__), batch)  # type: ignore[attr-defined]
            connection.execute(text("ANALYZE"))
    return time.perf_counter() - started


def new_request(customer: Customer, number: int, rng: random.Random) -> PaymentRequest:
    """A payment to score: mostly the customer's habits, sometimes a new device or country."""
    key = f"new_{number:06d}_{uuid.uuid4().hex[:6]}"
    device = rng.choice(customer.devices) if rng.random() < 0.9 else f"dev_new_{number}"
    country = rng.choice(customer.countries) if rng.random() < 0.9 else rng.choice(COUNTRIES)
    return PaymentRequest(
        payment_id=f"pay_{key}",
        merchant_id=MERCHANT,
        idempotency_key=key,
        fingerprint=key,
        amount_minor=max(1, int(customer.typical_minor * rng.choice((0.5, 1, 1.5, 5)))),
        currency=customer.currency,
        customer_id=customer.id,
        payment_method=rng.choice(customer.methods),
        order_id=f"order_{key}",
        risk=RiskContext(
            ip_address="203.0.113.7",
            device_id=device if rng.random() < 0.95 else None,
            country=country,
        ),
    )


def record(engine: Engine, request: PaymentRequest) -> None:
    """The payment as the workflow leaves it before scoring: in the ledger, ``risk_check``."""
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            insert(Payment.__table__),  # type: ignore[attr-defined]
            {
                "id": request.payment_id,
                "merchant_id": request.merchant_id,
                "idempotency_key": request.idempotency_key,
                "fingerprint": request.fingerprint,
                "workflow_id": f"payment:{request.merchant_id}:{request.idempotency_key}",
                "status": PaymentStatus.RISK_CHECK.value,
                "amount_minor": request.amount_minor,
                "currency": request.currency,
                "customer_id": request.customer_id,
                "order_id": request.order_id,
                "payment_method": request.payment_method,
                "metadata": {},
                "capture_method": "automatic",
                "risk_factors": [],
                "device_id": request.risk.device_id,
                "country": request.risk.country,
                "last_seq": 2,
                "created_at": now,
                "updated_at": now,
            },
        )


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def explain(engine: Engine, request: PaymentRequest, rules: RiskRules) -> None:
    subject = queries.Subject(
        payment_id=request.payment_id,
        merchant_id=request.merchant_id,
        customer_id=request.customer_id,
        payment_method=request.payment_method,
        currency=request.currency,
        device_id=request.risk.device_id,
        country=request.risk.country,
    )
    query = queries.scoring_query(
        small_amount_major=rules.card_testing_small_amount_major,
        decline_codes=rules.card_testing_decline_codes,
        history_limit=rules.history_max_payments,
    )
    values = queries.parameters(subject, rules.windows(utcnow()))
    print(
        f"\n-- EXPLAIN of the scoring statement ({request.customer_id}, {request.payment_method})"
    )
    with engine.connect() as connection:
        for row in connection.execute(Explain(query), values):
            # PostgreSQL: one text column. SQLite: (id, parent, notused, detail).
            print(f"   {row[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.risk", description=__doc__)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    parser.add_argument("--payments", type=int, default=100_000, help="history rows to load")
    parser.add_argument("--customers", type=int, default=10_000, help="customers they belong to")
    parser.add_argument("--score", type=int, default=1_000, help="payments to score")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generated data")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    rules = RiskRules()
    ledger = sqlite_ledger() if args.sqlite else postgres_ledger()
    with ledger as engine:
        customers = make_customers(args.customers, rng)
        rows = history_rows(customers, args.payments, utcnow(), rng)
        print(f"loading {args.payments:,} payments of {args.customers:,} customers", flush=True)
        seconds = load(engine, rows, args.payments)
        print(f"loaded in {seconds:.1f} s ({args.payments / seconds:,.0f} rows/s)", flush=True)

        activities = RiskActivities(session_factory(engine), rules)
        environment = ActivityEnvironment()
        latencies: dict[str, list[float]] = {"all": [], "heavy": [], "attacked": []}
        fired: Counter[str] = Counter()
        scores: list[int] = []
        last: dict[str, PaymentRequest] = {}
        print(f"scoring {args.score:,} payments", flush=True)
        for number in range(args.score):
            roll = rng.random()
            if roll < 0.05:
                group, customer = "heavy", customers[0]
            elif roll < 0.10:
                group, customer = "attacked", rng.choice(customers[1 : 1 + BURST_CUSTOMERS])
            else:
                group, customer = "all", rng.choice(customers[1 + BURST_CUSTOMERS :])
            request = new_request(customer, number, rng)
            record(engine, request)
            started = time.perf_counter()
            result: RiskAssessment = environment.run(
                activities.score_risk, RiskInput(request=request)
            )
            elapsed = (time.perf_counter() - started) * 1000
            latencies["all"].append(elapsed)
            if group != "all":
                latencies[group].append(elapsed)
            fired.update(factor.name for factor in result.factors)
            scores.append(result.score)
            last[group] = request
            if (number + 1) % 200 == 0:
                print(f"  scored {number + 1:,}/{args.score:,}", flush=True)

        database = engine.dialect.name
        print(f"\nscore_risk latency on {database}, {args.score:,} payments (1 read + 1 upsert):")
        heavy_rows = args.payments // 20
        for group, title in (
            ("all", "all payments"),
            ("heavy", f"the heavy customer ({heavy_rows:,} payments)"),
            ("attacked", "customers mid card-testing"),
        ):
            values = latencies[group]
            if not values:
                continue
            print(
                f"  {title} (n={len(values)}): p50 {percentile(values, 50):.2f} ms"
                f" · p95 {percentile(values, 95):.2f} ms · p99 {percentile(values, 99):.2f} ms"
                f" · max {max(values):.2f} ms"
            )
        print(f"  mean score {statistics.fmean(scores):.1f}; factors fired: {dict(fired)}")
        for group in ("all", "heavy"):
            if group in last:
                explain(engine, last[group], rules)


if __name__ == "__main__":
    main()
