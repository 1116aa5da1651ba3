"""The big store that the segment, scoring and model benchmarks share.

    uv run python bench/_bigdata.py [--contacts 1000000] [--events 20000000] [--db PATH]

`ensure_big()` builds it once (about ten minutes on two cores) and reuses it afterwards:
SQLite, migrated to head, with

- contacts with declared attributes like the demo workspace's (plan, lifetime_value,
  signup_date, industry, job_title, lead_source, country), a time zone and an email;
- companies (one per ~10 contacts; 70 % of contacts are members) with employees and mrr;
- email marketing consent (80 % opted in, 10 % out), tags (vip, newsletter, churned);
- events over the 180 days before `NOW`, heavy-tailed per contact, in time order, with a
  planted signal: a latent intent per contact raises both its engagement (demo requests,
  pricing views, trials) and its chance of "Order Completed" — so models have something real
  to learn and scores something to rank.

Rows are written straight through the driver with the events indexes dropped during the load
and rebuilt after (an honest final layout: the same indexes as the migrations create).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

import numpy as np
import orjson
from rich.progress import Progress

from cadenza.store import upgrade

NOW = 1_795_000_000_000
"""'Now' of the dataset (2026-11-18): every event happened in the 180 days before it."""
DAY = 86_400_000
HORIZON_DAYS = 180
DEFAULT = Path(__file__).parent / "out" / "big.db"

PLANS = ("free", "starter", "pro", "enterprise")
INDUSTRIES = ("software", "ecommerce", "financial_services", "healthcare", "education",
              "media", "manufacturing", "nonprofit")
LEAD_SOURCES = ("organic", "paid_search", "paid_social", "referral", "email", "direct",
                "partner")
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "BR", "IN")
ZONES = {"US": "America/New_York", "GB": "Europe/London", "DE": "Europe/Berlin",
         "FR": "Europe/Paris", "CA": "America/Toronto", "AU": "Australia/Sydney",
         "NL": "Europe/Amsterdam", "ES": "Europe/Madrid", "BR": "America/Sao_Paulo",
         "IN": "Asia/Kolkata"}
TITLES = ("Engineer", "Product Manager", "Designer", "Marketing Manager", "CTO", "CEO",
          "Head of Growth", "Analyst", "Student", "Consultant")

# Event names, base weight, and how much a contact's intent tilts it (exponent on intent).
EVENTS: tuple[tuple[str, float, float], ...] = (
    ("Page Viewed", 40.0, 0.0),
    ("Logged In", 14.0, 0.2),
    ("Feature Used", 12.0, 0.4),
    ("Email Opened", 12.0, 0.0),
    ("Email Link Clicked", 4.0, 0.3),
    ("Product Viewed", 8.0, 0.5),
    ("Pricing Viewed", 3.0, 1.0),
    ("Added To Cart", 2.0, 1.0),
    ("Trial Started", 0.6, 1.2),
    ("Demo Requested", 0.4, 1.5),
    ("Order Completed", 0.3, 1.8),
    ("Subscription Cancelled", 0.3, -1.0),
)
PATHS = ("/", "/pricing", "/blog/async-standups", "/features", "/docs", "/customers")

FIELDS = (
    ("plan", "enum", {"values": list(PLANS)}, "contact"),
    ("lifetime_value", "number", {}, "contact"),
    ("signup_date", "date", {}, "contact"),
    ("industry", "enum", {"values": list(INDUSTRIES)}, "contact"),
    ("job_title", "string", {}, "contact"),
    ("lead_source", "enum", {"values": list(LEAD_SOURCES)}, "contact"),
    ("country", "string", {}, "contact"),
    ("employees", "number", {}, "company"),
    ("mrr", "number", {}, "company"),
)
_EVENT_INDEXES = (
    "CREATE INDEX ix_events_contact_id_timestamp_name ON events (contact_id, timestamp, name)",
    "CREATE INDEX ix_events_name_timestamp_contact_id ON events (name, timestamp, contact_id)",
)


def ensure_big(path: Path | None = None, contacts: int = 1_000_000,
               events: int = 20_000_000) -> Path:
    """The big store at `path` (default bench/out/big.db), built first if it is missing."""
    path = path or DEFAULT
    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    build(path, contacts, events)
    done.write_text(f"{contacts} contacts, {events} events, "
                    f"{time.perf_counter() - started:.0f} s\n")
    return path


def build(path: Path, contacts: int, events: int, seed: int = 6) -> None:
    """Fill a fresh store at `path`."""
    upgrade(f"sqlite:///{path}")
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1048576")
    intent = rng.lognormal(0.0, 0.8, contacts)
    with Progress() as progress:
        _fields(db)
        _contacts(db, rng, intent, progress)
        _companies(db, rng, contacts, progress)
        _consents_and_tags(db, rng, contacts)
        _events(db, rng, intent, events, progress)
        task = progress.add_task("indexes and statistics", total=len(_EVENT_INDEXES) + 1)
        for statement in _EVENT_INDEXES:
            db.execute(statement)
            progress.advance(task)
        db.execute("ANALYZE")
        progress.advance(task)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()


def _fields(db: sqlite3.Connection) -> None:
    db.executemany("INSERT INTO fields (name, type, options, entity, description, created_at) "
                   "VALUES (?, ?, ?, ?, '', ?)",
                   [(n, t, orjson.dumps(o).decode(), e, NOW) for n, t, o, e in FIELDS])


def _contacts(db: sqlite3.Connection, rng: np.random.Generator, intent: np.ndarray,
              progress: Progress) -> None:
    n = len(intent)
    task = progress.add_task("contacts", total=n)
    plan = np.minimum(3, (rng.random(n) * 2.2 + np.log1p(intent)).astype(int))
    industry = rng.integers(0, len(INDUSTRIES), n)
    source = rng.integers(0, len(LEAD_SOURCES), n)
    country = rng.integers(0, len(COUNTRIES), n)
    title = rng.integers(0, len(TITLES), n)
    signup = NOW - rng.integers(0, 900, n) * DAY
    ltv = np.round(np.where(plan > 0, rng.gamma(2.0, 150.0, n) * intent, 0.0), 2)
    chunk = 100_000
    db.execute("BEGIN")
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            cid = i + 1
            attrs = {"plan": PLANS[plan[i]], "industry": INDUSTRIES[industry[i]],
                     "lead_source": LEAD_SOURCES[source[i]], "country": COUNTRIES[country[i]],
                     "job_title": TITLES[title[i]],
                     "signup_date": time.strftime("%Y-%m-%d", time.gmtime(signup[i] / 1000))}
            if ltv[i]:
                attrs["lifetime_value"] = float(ltv[i])
            rows.append((cid, f"person{cid}@example.com", f"u{cid}",
                         orjson.dumps(attrs).decode(), ZONES[COUNTRIES[country[i]]], "en",
                         int(signup[i]), NOW))
        db.executemany("INSERT INTO contacts (id, email, user_id, attributes, timezone, locale, "
                       "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO identities (kind, value, contact_id, source, created_at) "
                       "VALUES ('email', ?, ?, 'bench', ?)",
                       [(r[1], r[0], NOW) for r in rows])
        progress.update(task, completed=start + len(rows))
    db.execute("COMMIT")


def _companies(db: sqlite3.Connection, rng: np.random.Generator, contacts: int,
               progress: Progress) -> None:
    count = max(1, contacts // 10)
    employees = np.maximum(1, rng.lognormal(3.5, 1.4, count).astype(int))
    mrr = np.round(employees * rng.gamma(2.0, 12.0, count), 0)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO companies (id, group_id, name, domain, attributes, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(k + 1, f"g{k + 1}", f"Company {k + 1}", f"company{k + 1}.example",
          orjson.dumps({"employees": int(employees[k]), "mrr": float(mrr[k]),
                        "industry": INDUSTRIES[k % len(INDUSTRIES)]}).decode(), NOW, NOW)
         for k in range(count)])
    members = np.flatnonzero(rng.random(contacts) < 0.7) + 1
    company = rng.integers(1, count + 1, len(members))
    db.executemany("INSERT INTO company_members (company_id, contact_id, created_at) "
                   "VALUES (?, ?, ?)",
                   [(int(c), int(m), NOW) for c, m in zip(company, members, strict=True)])
    db.execute("COMMIT")
    progress.add_task("companies", total=1, completed=1)


def _consents_and_tags(db: sqlite3.Connection, rng: np.random.Generator, contacts: int) -> None:
    draw = rng.random(contacts)
    rows = [(i + 1, "opted_in" if d < 0.8 else "opted_out") for i, d in enumerate(draw)
            if d < 0.9]
    db.execute("BEGIN")
    db.executemany("INSERT INTO consents (contact_id, channel, purpose, status, source, "
                   "updated_at) VALUES (?, 'email', 'marketing', ?, 'bench', ?)",
                   [(cid, status, NOW) for cid, status in rows])
    for tag, share in (("vip", 0.05), ("newsletter", 0.3), ("churned", 0.08)):
        chosen = np.flatnonzero(rng.random(contacts) < share) + 1
        db.executemany("INSERT INTO contact_tags (contact_id, tag, created_at) "
                       "VALUES (?, ?, ?)", [(int(c), tag, NOW) for c in chosen])
    db.execute("COMMIT")


def _events(db: sqlite3.Connection, rng: np.random.Generator, intent: np.ndarray, total: int,
            progress: Progress) -> None:
    """`total` events: owners heavy-tailed and tilted by intent, names tilted by intent."""
    task = progress.add_task("events", total=total)
    n = len(intent)
    activity = rng.pareto(1.6, n) + 0.2
    activity *= intent ** 0.5
    owners = rng.choice(n, size=total, p=activity / activity.sum()).astype(np.int64) + 1
    stamps = NOW - rng.integers(1, HORIZON_DAYS * DAY, total)
    order = np.argsort(stamps, kind="stable")
    owners, stamps = owners[order], stamps[order]
    db.execute("DROP INDEX IF EXISTS ix_events_contact_id_timestamp")
    db.execute("DROP INDEX IF EXISTS ix_events_contact_id_timestamp_name")
    db.execute("DROP INDEX IF EXISTS ix_events_name_timestamp")
    db.execute("DROP INDEX IF EXISTS ix_events_name_timestamp_contact_id")
    base = np.array([w for _, w, _ in EVENTS])
    tilt = np.array([t for _, _, t in EVENTS])
    names = [name for name, _, _ in EVENTS]
    # Name per event: probability proportional to base weight * intent^tilt, sampled by
    # inverse CDF per intent band (ten bands keep it vectorised).
    bands = np.clip((np.log(intent) + 2.0) / 4.0 * 10, 0, 9).astype(int)
    band_of_event = bands[owners - 1]
    band_intent = np.exp(np.arange(10) * 0.4 - 2.0 + 0.2)
    which = np.empty(total, dtype=np.int8)
    uniform = rng.random(total)
    for band in range(10):
        weights = base * band_intent[band] ** tilt
        cdf = np.cumsum(weights / weights.sum())
        mask = band_of_event == band
        which[mask] = np.searchsorted(cdf, uniform[mask]).clip(0, len(names) - 1)
    revenue = np.round(rng.gamma(2.0, 60.0, total), 2)
    path_pick = rng.integers(0, len(PATHS), total)
    page, order_done = names.index("Page Viewed"), names.index("Order Completed")
    product, cart = names.index("Product Viewed"), names.index("Added To Cart")
    chunk = 250_000
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        rows = []
        kinds = which[start:stop].tolist()
        prices = revenue[start:stop].tolist()
        picks = path_pick[start:stop].tolist()
        for i, (kind, owner, stamp) in enumerate(zip(
                kinds, owners[start:stop].tolist(), stamps[start:stop].tolist(), strict=True)):
            if kind == page:
                props = f'{{"path": "{PATHS[picks[i]]}"}}'
            elif kind == order_done:
                props = f'{{"revenue": {prices[i]}, "order_id": "o{start + i}", ' \
                        '"currency": "USD"}'
            elif kind in (product, cart):
                props = f'{{"sku": "SKU-{picks[i]}", "price": {prices[i]}}}'
            else:
                props = "{}"
            rows.append((f"b{start + i}", owner, names[kind], props, stamp))
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (message_id, contact_id, type, name, properties, "
                       "context, source, timestamp, received_at) "
                       "VALUES (?, ?, 'track', ?, ?, '{}', 'bench', ?, ?)",
                       [(*r, r[4]) for r in rows])
        db.execute("COMMIT")
        progress.update(task, completed=stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    path = ensure_big(args.db, args.contacts, args.events)
    print(f"{path.name}: ready in {time.perf_counter() - started:.0f} s "
          f"({path.stat().st_size / 1e9:.1f} GB)")


if __name__ == "__main__":
    main()
