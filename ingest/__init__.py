"""Ingest (入库): the inbox's feeds taken into the warehouse, batch by batch.

* :mod:`ingest.feeds` — one declaration per feed (kind, columns, checks, unique key, stage rule
  and warning, insert, settle, announce, event-time column); ``KINDS`` and ``EVENT_TIME`` are
  derived from it.
* :mod:`ingest.discover` — the inbox's files in the order things happened.
* :mod:`kernel.tables` — reading a file (CSV, Parquet, JSON Lines) as text rows, refusals, the
  staging folders beside the warehouse.
* :mod:`ingest.take` — a batch of files of one kind taken in one warehouse session and one
  transaction (``take_batch``; ``take_file`` is a batch of one).

The domain rules stay in their rooms (``sampling``, ``lab``, ``reporting``) and every write in
``warehouse.writer``; ``flows`` only wraps :mod:`ingest.take` in tasks. This package's
``__init__`` imports nothing, so ``lab.instruments`` can use :mod:`kernel.tables` without a circle.
"""
