"""The long crash loop of issue 4: `cadenza worker` SIGKILLed at random moments, by hand.

    uv run python bench/crash_loop.py [--contacts 20000] [--kills 20] [--seed 20]
        [--waves 20] [--wave-every 5] [--database-url postgresql://.../empty_db]

A journey (email, 2 s wait, branch on plan, webhook, 2 s wait, email) over `--contacts`
contacts, who enter in `--waves` waves of entry events `--wave-every` seconds apart, runs in
`cadenza worker` subprocesses against a real SMTP server and a real HTTP receiver on
loopback; the worker is killed `--kills` times at seeded random moments and restarted until
every enrollment has completed. Then the checks of `tests/engine/test_crash_loop.py` run
(nothing missing, no key twice, each webhook effect once, every duplicate with its key and
paid for by a lost claim), and the figures are printed:
contacts, kills, claims lost, SMTP duplicates, HTTP repeats, seconds.

Without `--database-url` it runs on a fresh SQLite file in a temporary directory; with one,
the database must be empty (it is migrated here). The short variant runs in the test suite;
`CADENZA_LONG=1 uv run pytest tests/engine/test_crash_loop.py` runs this size there too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# The harness and the loopback receivers live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadenza.store import Store, upgrade
from tests.channels.servers import smtp_sink
from tests.engine.crashloop import (
    OversizedClaim,
    Scenario,
    assert_books,
    assert_claims_within_batch,
    busy_http_receiver,
    run_crash_loop,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--life", type=float, nargs=2, default=(0.5, 4.0),
                        metavar=("MIN_S", "MAX_S"),
                        help="a killed worker lives this long after taking its leases")
    parser.add_argument("--waves", type=int, default=20,
                        help="the contacts enter in this many waves of entry events")
    parser.add_argument("--wave-every", type=float, default=5.0, metavar="S",
                        help="seconds between waves")
    parser.add_argument("--timeout", type=float, default=1_500.0)
    parser.add_argument("--database-url", default=None,
                        help="an empty database to use instead of a scratch SQLite file")
    args = parser.parse_args()
    scenario = Scenario(contacts=args.contacts, kills=args.kills, seed=args.seed,
                        life_s=tuple(args.life), waves=args.waves,
                        wave_every_s=args.wave_every, timeout_s=args.timeout)
    with tempfile.TemporaryDirectory(prefix="cadenza-crash-") as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'crash.db'}"
        upgrade(url)
        store = Store.create(url)
        try:
            with smtp_sink() as smtp, busy_http_receiver() as http:
                outcome = run_crash_loop(store, url, smtp, http, scenario, Path(scratch),
                                         progress=lambda text: print(text, flush=True))
        finally:
            store.dispose()
    figures = outcome.figures()
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    assert_books(outcome)
    print("books: every expected row sent once, no key twice, each webhook effect once, "
          "every duplicate carries its key and a lost claim")
    try:
        assert_claims_within_batch(outcome)
    except OversizedClaim as exc:
        print(f"claims: {exc}")
    else:
        print("claims: never more than one dispatch batch held at once")


if __name__ == "__main__":
    main()
