"""``make bench``: the benchmarks, each against its baselines in the same run.

* ``bench.city`` (issue 6): simulated cities of 1 M, 5 M and 25.7 M people taken from the inbox
  through every link (register, collect, deliver, test, re-samples) to the report, time and peak
  memory per link and end to end; a 50,000-scan micro-batch; the time from a results file
  landing to its positive pools' re-sampling orders; baselines: the same coverage and pool logic
  in plain pandas and on PostgreSQL 15 (Debian's, started by the bench on port 5434, loaded with
  COPY), asserted equal; the floor (``bench.floor``: the same inbox loaded in bulk with plain
  DuckDB SQL, the same coverage asserted equal, tubetrail ÷ floor per link) and "last file →
  report" (the round wave by wave, then its last wave and the nightly report). Figures in ``<workdir>/figures.json`` (default
  ``/tmp/tubetrail-bench-city``).
* ``bench.calls``: results for a Shanghai-scale round (2.43 M pooled tubes, 24.3 M people)
  taken, called, expanded to people and alerted; baseline: the same calls in a Python loop.

``docs/benchmarks.md`` records the figures with the machine they ran on.

    python -m bench.run [--sizes 1000000,5000000,25700000] [--skip-calls] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import sys

from bench import calls, city


def main() -> None:
    parser = argparse.ArgumentParser(description="make bench: bench.city, then bench.calls")
    parser.add_argument("--sizes", default="1000000,5000000,25700000")
    parser.add_argument("--skip-calls", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    city_argv = ["--sizes", args.sizes] + (["--skip-postgres"] if args.skip_postgres else [])
    city.main(city_argv)
    if not args.skip_calls:
        sys.argv = [sys.argv[0]]
        calls.main()


if __name__ == "__main__":
    main()
