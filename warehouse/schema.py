"""The warehouse schema as numbered migrations, applied in order and recorded once each.

A migration is never edited after it has shipped: a change is a new migration at the end.
Person joins use ``person_key``: the first 128 bits of HMAC-SHA256(key, id_type|id_number),
never a plain hash (which is brute-forced over the small space of ID numbers).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "ledger, quarantine, audit, reference data and the register",
        """
        CREATE TABLE warehouse_settings (
            name VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL
        );
        CREATE TABLE ingest_ledger (
            content_hash VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            file_name VARCHAR NOT NULL,
            file_format VARCHAR,
            size_bytes BIGINT NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('accepted', 'refused')),
            rows_read BIGINT NOT NULL,
            rows_accepted BIGINT NOT NULL,
            rows_quarantined BIGINT NOT NULL,
            warnings JSON,
            message VARCHAR,
            ingested_at TIMESTAMPTZ NOT NULL,
            flow_run_id VARCHAR,
            CHECK (rows_read = rows_accepted + rows_quarantined)
        );
        CREATE TABLE quarantine (
            content_hash VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            file_name VARCHAR NOT NULL,
            line BIGINT,
            "column" VARCHAR,
            reason VARCHAR NOT NULL,
            raw VARCHAR,
            quarantined_at TIMESTAMPTZ NOT NULL,
            flow_run_id VARCHAR
        );
        CREATE SEQUENCE audit_seq;
        CREATE TABLE audit (
            audit_id BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
            recorded_at TIMESTAMPTZ NOT NULL,
            flow_run_id VARCHAR,
            entity VARCHAR NOT NULL,
            entity_key VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            before JSON,
            after JSON
        );
        CREATE TABLE sites (
            site_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            district VARCHAR NOT NULL,
            subdistrict VARCHAR,
            community VARCHAR,
            kind VARCHAR NOT NULL,
            opens TIME,
            closes TIME,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE labs (
            lab_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            daily_capacity_tubes BIGINT,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE zones (
            grid VARCHAR NOT NULL,
            zone VARCHAR NOT NULL,
            since TIMESTAMPTZ,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE register (
            person_key UHUGEINT NOT NULL,
            id_type VARCHAR NOT NULL,
            id_number VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            phone VARCHAR,
            district VARCHAR NOT NULL,
            subdistrict VARCHAR NOT NULL,
            community VARCHAR NOT NULL,
            grid VARCHAR NOT NULL,
            address VARCHAR,
            household_id VARCHAR,
            mobility_limited BOOLEAN NOT NULL,
            key_group VARCHAR,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        2,
        "rounds and the collect and deliver links: scans, manifests, receipts",
        """
        CREATE TABLE rounds (
            round_id VARCHAR PRIMARY KEY,
            starts_at TIMESTAMPTZ NOT NULL,
            ends_at TIMESTAMPTZ NOT NULL,
            districts VARCHAR[],
            pool_size INTEGER NOT NULL,
            opened_at TIMESTAMPTZ NOT NULL,
            flow_run_id VARCHAR,
            CHECK (ends_at > starts_at)
        );
        CREATE TABLE scans (
            round_id VARCHAR NOT NULL,
            scanned_at TIMESTAMPTZ NOT NULL,
            site_id VARCHAR NOT NULL,
            collector_id VARCHAR NOT NULL,
            tube_barcode VARCHAR NOT NULL,
            event VARCHAR NOT NULL CHECK (event IN ('add', 'seal', 'void')),
            person_key UHUGEINT,
            id_type VARCHAR,
            id_number VARCHAR,
            name VARCHAR,
            phone VARCHAR,
            capacity INTEGER,
            resample BOOLEAN NOT NULL,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT NOT NULL
        );
        CREATE TABLE manifests (
            box_id VARCHAR NOT NULL,
            tube_barcode VARCHAR NOT NULL,
            site_id VARCHAR NOT NULL,
            packed_at TIMESTAMPTZ NOT NULL,
            courier_id VARCHAR,
            departed_at TIMESTAMPTZ,
            lab_id VARCHAR,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT NOT NULL
        );
        CREATE TABLE receipts (
            lab_id VARCHAR NOT NULL,
            box_id VARCHAR NOT NULL,
            tube_barcode VARCHAR NOT NULL,
            received_at TIMESTAMPTZ NOT NULL,
            condition VARCHAR NOT NULL,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT NOT NULL
        );
        """,
    ),
    (
        3,
        "results: every well, target and Ct as the instruments reported them",
        """
        CREATE TABLE results (
            lab_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            plate_id VARCHAR NOT NULL,
            well VARCHAR NOT NULL,
            sample VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            ct DOUBLE,
            finished_at TIMESTAMPTZ,
            source_format VARCHAR NOT NULL,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT NOT NULL
        );
        """,
    ),
    (
        4,
        "SMS reminders: the outbox (one row per person and cool-down window) and opt-outs",
        """
        CREATE TABLE sms_outbox (
            message_id VARCHAR PRIMARY KEY,
            round_id VARCHAR NOT NULL,
            person_key UHUGEINT NOT NULL,
            phone VARCHAR NOT NULL,
            body VARCHAR NOT NULL,
            params JSON NOT NULL,
            planned_at TIMESTAMPTZ NOT NULL,
            state VARCHAR NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL,
            provider VARCHAR NOT NULL,
            provider_message_id VARCHAR,
            error VARCHAR,
            finished_at TIMESTAMPTZ,
            flow_run_id VARCHAR
        );
        CREATE TABLE sms_optouts (
            person_key UHUGEINT PRIMARY KEY,
            recorded_at TIMESTAMPTZ NOT NULL,
            reason VARCHAR NOT NULL
        );
        """,
    ),
    (
        5,
        "alerts: the outbox (one row per thing to announce, written with the facts that raise it)",
        """
        CREATE TABLE alert_outbox (
            alert_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            round_id VARCHAR,
            payload JSON NOT NULL,
            raised_at TIMESTAMPTZ NOT NULL,
            source_hash VARCHAR,
            state VARCHAR NOT NULL CHECK (state IN ('pending', 'published')),
            attempts INTEGER NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            published_at TIMESTAMPTZ,
            flow_run_id VARCHAR,
            UNIQUE (kind, subject)
        );
        -- names this warehouse among others on one Prefect server (event ids are derived from it)
        INSERT INTO warehouse_settings VALUES ('warehouse_id', CAST(uuid() AS VARCHAR));
        """,
    ),
    (
        6,
        "SMS outbox claims: a sender owns its messages under a lease; 'sending' and 'unknown' states",
        # DuckDB cannot ALTER a CHECK constraint: the table is rebuilt with its rows
        """
        CREATE TABLE sms_outbox_v6 (
            message_id VARCHAR PRIMARY KEY,
            round_id VARCHAR NOT NULL,
            person_key UHUGEINT NOT NULL,
            phone VARCHAR NOT NULL,
            body VARCHAR NOT NULL,
            params JSON NOT NULL,
            planned_at TIMESTAMPTZ NOT NULL,
            state VARCHAR NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
            attempts INTEGER NOT NULL,
            provider VARCHAR NOT NULL,
            provider_message_id VARCHAR,
            error VARCHAR,
            finished_at TIMESTAMPTZ,
            flow_run_id VARCHAR,
            claimed_by VARCHAR,
            claimed_at TIMESTAMPTZ,
            lease_until TIMESTAMPTZ,
            CHECK ((state = 'sending') = (claimed_by IS NOT NULL AND lease_until IS NOT NULL))
        );
        INSERT INTO sms_outbox_v6 SELECT *, NULL, NULL, NULL FROM sms_outbox;
        DROP TABLE sms_outbox;
        ALTER TABLE sms_outbox_v6 RENAME TO sms_outbox;
        """,
    ),
    (
        7,
        "re-sample scans that wait for their order (scanned before the results that order them)",
        """
        CREATE TABLE waiting_scans (
            scanned_at TIMESTAMPTZ NOT NULL,
            site_id VARCHAR NOT NULL,
            collector_id VARCHAR NOT NULL,
            tube_barcode VARCHAR NOT NULL,
            event VARCHAR NOT NULL CHECK (event IN ('add', 'seal', 'void')),
            person_key UHUGEINT,
            id_type VARCHAR,
            id_number VARCHAR,
            name VARCHAR,
            phone VARCHAR,
            capacity INTEGER,
            source_hash VARCHAR NOT NULL,
            source_line BIGINT NOT NULL
        );
        """,
    ),
    (
        8,
        "stock counts: reagents and consumables per holder (lab, district, depot) and item, as counted",
        """
        CREATE TABLE stock_counts (
            counted_at TIMESTAMPTZ NOT NULL,
            holder VARCHAR NOT NULL,
            item VARCHAR NOT NULL,
            quantity BIGINT NOT NULL CHECK (quantity >= 0),
            tests_per_unit BIGINT NOT NULL CHECK (tests_per_unit > 0),
            source_hash VARCHAR NOT NULL,
            source_line BIGINT,
            updated_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        9,
        "result exports for the health-code platform: one row per export, the rows each delivered",
        # an export is recorded (header and rows) in one transaction before its file is written;
        # its file is always written again from these rows, so a re-run gives the same bytes.
        # Only exports with rows are recorded (an empty one delivers nothing and pins no ``since``).
        """
        CREATE TABLE result_exports (
            export_id INTEGER PRIMARY KEY,
            since TIMESTAMPTZ NOT NULL UNIQUE,
            until TIMESTAMPTZ NOT NULL,
            rows BIGINT NOT NULL,
            file_name VARCHAR NOT NULL,
            content_sha256 VARCHAR NOT NULL,
            parquet_sha256 VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            flow_run_id VARCHAR,
            CHECK (until >= since),
            CHECK (rows > 0)
        );
        CREATE TABLE result_export_rows (
            export_id INTEGER NOT NULL,
            round_id VARCHAR NOT NULL,
            person_key UHUGEINT NOT NULL,
            id_type VARCHAR NOT NULL,
            id_number VARCHAR NOT NULL,
            name VARCHAR,
            result VARCHAR NOT NULL CHECK (result IN ('negative', 'positive', 'withdrawn')),
            sampled_at TIMESTAMPTZ,
            called_at TIMESTAMPTZ NOT NULL,
            lab_id VARCHAR,
            tube_barcode VARCHAR NOT NULL,
            pooled BOOLEAN NOT NULL,
            amends VARCHAR
        );
        """,
    ),
    (
        10,
        "a unique index on the register's person key: an update file looks its people up (ART), no register scan",
        # issue 15: an update file of 100 people cost a scan of the whole register (25.7 M keys)
        # for its audit join, its DELETE and its NOT EXISTS insert; through the index it looks up
        # its own keys only (``warehouse.writer.upsert_with_audit``). Bulk files pay the index's
        # upkeep: they insert in key order, which keeps it cheap.
        """
        CREATE UNIQUE INDEX register_person_key ON register (person_key);
        """,
    ),
)

#: Natural keys of the tables that reference feeds upsert into (later file wins, audited).
UPSERT_KEYS: dict[str, tuple[str, ...]] = {
    "sites": ("site_id",),
    "labs": ("lab_id",),
    "zones": ("grid", "since"),
    "register": ("person_key",),
    # a count re-sent (same holder, item and time) is taken once: the later file wins, audited
    "stock_counts": ("holder", "item", "counted_at"),
}

#: The upsert keys that a unique index (DuckDB's ART) covers: a file with few keys finds its rows
#: through the index (``warehouse.writer.upsert_with_audit``) instead of joining the whole table.
INDEXED_UPSERT_KEYS: frozenset[str] = frozenset({
    "register",  # migration 10
    "sites", "labs",  # their PRIMARY KEY (migration 1)
})
