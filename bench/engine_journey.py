"""The reference journey over simulated time: steps per second, and exact outbox rows.

    uv run python bench/engine_journey.py [--contacts 1000000] [--batch 20000]
        [--resolution 60] [--db PATH]

The journey (issue 4): send a welcome message; wait 2 days; branch on plan == "pro" (30% of
contacts) to one of two messages; wait up to 3 days for `purchased` (20% of contacts buy,
at a uniform moment inside that window); send a last message to those who did not; end.

Simulated time moves from one moment of interest to the next (a due enrollment, a planned
purchase), in steps of at least `--resolution` seconds: what falls due within a step is done
in one pass. The purchases are spread over three days, so the resolution sets how many small
passes the run makes (60 s: about 4,300; 15 min: about 300).

Setup (contacts, planned purchase events) is not timed. Timed: the whole run, from the
entry events to the last message, through the real engine on a fake clock (SQLite file,
one process). Prints steps, seconds, steps/s, and checks every message's outbox row count
against what the population implies (exactly).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cadenza.engine.simulate import Behaviour, Simulation
from cadenza.journeys import compile_definition, load_journey
from cadenza.store import Store, upgrade

REFERENCE = (Path(__file__).parents[1] / "docs" / "examples" / "reference-journey.yaml"
             ).read_text(encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--resolution", type=float, default=60.0,
                        help="simulated seconds per step of the clock (at least)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as scratch:
        path = args.db or Path(scratch) / "engine.db"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        upgrade(url)
        store = Store.create(url)
        definition = load_journey(REFERENCE)
        spec = compile_definition(definition)
        behaviour = Behaviour(attributes={"plan": {"pro": 0.3, "basic": 0.7}},
                              conversions={"purchased": 0.2},
                              conversion_window_days=(2.0001, 4.999))
        sim = Simulation(store, spec, definition, behaviour, batch_size=args.batch,
                         resolution_ms=int(args.resolution * 1000))
        t0 = time.perf_counter()
        sim.setup(args.contacts, 6)
        print(f"setup: {args.contacts:,} contacts in {time.perf_counter() - t0:.1f} s")
        stop_checkpoints = sim.start_checkpointer()  # as `cadenza serve` runs one
        started = time.perf_counter()
        steps = sim.enter_all().steps
        steps += sim.run(6).steps
        seconds = time.perf_counter() - started
        stop_checkpoints.set()
        result = sim.result(steps, seconds, 6)
        with store.read() as conn:
            pro = conn.exec_driver_sql(
                "SELECT count(*) FROM contacts WHERE json_extract(attributes, '$.plan') = 'pro'"
            ).scalar_one()
            buyers = conn.exec_driver_sql(
                "SELECT count(DISTINCT contact_id) FROM events WHERE name = 'purchased'"
            ).scalar_one()
            dupes = conn.exec_driver_sql(
                "SELECT count(*) - count(DISTINCT idempotency_key) FROM outbox").scalar_one()
        n = args.contacts
        expected = {"welcome": n, "pro-tips": pro, "basics": n - pro, "last-chance": n - buyers}
        print(f"steps: {steps:,} in {seconds:.1f} s = {steps / seconds:,.0f} steps/s")
        ok = True
        for node, want in expected.items():
            got = result.messages[node]
            ok &= got == want
            print(f"  outbox {node:<12} {got:>9,}  expected {want:>9,}  "
                  f"{'ok' if got == want else 'MISMATCH'}")
        print(f"  duplicate idempotency keys: {dupes}")
        print(f"  outcomes: {dict(result.outcomes)}")
        store.dispose()
        if not ok or dupes:
            raise SystemExit("outbox rows do not match the population")


if __name__ == "__main__":
    main()
