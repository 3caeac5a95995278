"""``make bench``: the benchmarks built so far, each against its naive baseline in the same run.

* ``bench.calls``: results for a Shanghai-scale round (2.43 M pooled tubes, 24.3 M people)
  taken, called, expanded to people and alerted; baseline: the same calls in a Python loop.

Figures go to stdout and to ``<workdir>/figures.json``; ``docs/benchmarks.md`` records them with
the machine they ran on. The city-scale suite of issue 6 (1 M, 5 M, 25.7 M; pandas and
PostgreSQL baselines) is not built yet."""

from __future__ import annotations

from bench import calls


def main() -> None:
    calls.main()


if __name__ == "__main__":
    main()
