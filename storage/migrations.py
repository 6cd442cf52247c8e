"""Numbered schema migrations, tracked in ``PRAGMA user_version``.

A migration is applied at most once, in order, each in its own transaction that also bumps
``user_version``. ``user_version`` lives in the database header, which sqlite writes inside
the transaction like any other page, so a crash mid-migration leaves both the schema and
the version exactly as they were before it. Migrations are append-only: never edit one that
has shipped, add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.errors import SchemaTooNew


@dataclass(frozen=True)
class Migration:
    """One schema step.

    Attributes:
        version: the ``user_version`` the database has once this step is applied; versions
            run 1..N without gaps.
        description: why the step exists, for people reading the history.
        sql: one or more statements; executed as a script inside the migration's transaction.
    """

    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="node metadata (created_at, peer id, ...) and the append-only event journal",
        sql="""
            CREATE TABLE node_meta (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );
            CREATE TABLE events (
                id    INTEGER PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                kind  TEXT NOT NULL,
                body  BLOB NOT NULL
            );
        """,
    ),
    Migration(
        version=2,
        description="peers met on the network, redialled after a restart",
        sql="""
            CREATE TABLE peers (
                peer_id      TEXT PRIMARY KEY,
                addrs        TEXT NOT NULL,   -- JSON list of multiaddrs with /p2p/<peer id>
                roles        TEXT NOT NULL,   -- JSON list
                last_seen_ms INTEGER NOT NULL
            );
        """,
    ),
    Migration(
        version=3,
        description="the market: jobs, tasks, attempts, bids, logs; a worker's work",
        sql="""
            -- Money is TEXT holding decimal wei: sqlite integers stop at 2**63.
            -- state + revision make every move compare-and-set.
            CREATE TABLE jobs (
                job_id      BLOB PRIMARY KEY,
                name        TEXT NOT NULL,
                spec        TEXT NOT NULL,   -- the parsed job spec, JSON
                state       TEXT NOT NULL,
                revision    INTEGER NOT NULL,
                inputs      BLOB,            -- blob hash of the packed inputs
                inputs_size INTEGER NOT NULL,
                created_ms  INTEGER NOT NULL,
                deadline_ms INTEGER NOT NULL,
                updated_ms  INTEGER NOT NULL,
                reason      TEXT NOT NULL DEFAULT ''
            );
            CREATE TABLE tasks (
                job_id      BLOB NOT NULL REFERENCES jobs(job_id),
                idx         INTEGER NOT NULL,
                state       TEXT NOT NULL,
                revision    INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                worker      TEXT NOT NULL DEFAULT '',
                resume      BLOB,            -- msgpack Checkpoint held to resume from
                result      BLOB,            -- msgpack BlobRef of the outputs
                result_hash BLOB,
                reason      TEXT NOT NULL DEFAULT '',
                updated_ms  INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx)
            );
            CREATE TABLE attempts (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                worker      TEXT NOT NULL,
                addrs       TEXT NOT NULL,   -- JSON list
                price_wei   TEXT NOT NULL,   -- per GPU-second
                gpus        INTEGER NOT NULL,
                started_ms  INTEGER NOT NULL,
                ended_ms    INTEGER,
                vouched_wei TEXT NOT NULL DEFAULT '0',
                payable_wei TEXT,            -- set when the attempt ends
                voucher     BLOB,            -- the latest signed voucher sent
                outcome     TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (job_id, idx, attempt)
            );
            CREATE TABLE bids (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                worker      TEXT NOT NULL,
                price_wei   TEXT NOT NULL,
                gpus        INTEGER NOT NULL,
                est_s       INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                outcome     TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (job_id, idx, attempt, worker)
            );
            CREATE TABLE checkpoints (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                segment     INTEGER NOT NULL,
                hash        BLOB NOT NULL,
                chained     BLOB NOT NULL,
                seconds     INTEGER NOT NULL,
                held        INTEGER NOT NULL,  -- 1 once its blob is in our store
                PRIMARY KEY (job_id, idx, attempt, segment)
            );
            CREATE TABLE task_logs (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                seq         INTEGER NOT NULL,  -- line number within the attempt
                line        TEXT NOT NULL,
                PRIMARY KEY (job_id, idx, attempt, seq)
            );
            CREATE TABLE work (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                requester   TEXT NOT NULL,
                ord         BLOB NOT NULL,   -- the signed TaskOrder as received
                state       TEXT NOT NULL,
                revision    INTEGER NOT NULL,
                started_ms  INTEGER NOT NULL,
                voucher     BLOB,            -- the latest signed voucher received
                vouched_wei TEXT NOT NULL DEFAULT '0',
                result      BLOB,
                result_hash BLOB,
                error       TEXT NOT NULL DEFAULT '',
                updated_ms  INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx, attempt)
            );
        """,
    ),
    Migration(
        version=4,
        description="settlement: every chain transaction journaled, receipts reconciled",
        sql="""
            -- One row per transaction this node asked for, written BEFORE it is sent, so a
            -- crash or a chain outage loses nothing: pending rows are retried, sent ones
            -- reconciled against their receipt, and an embedded chain is rebuilt by replay.
            CREATE TABLE chain_txs (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                chain_id    INTEGER NOT NULL,
                contract    TEXT NOT NULL,
                op          TEXT NOT NULL,   -- contract function, e.g. deposit, claim
                args        TEXT NOT NULL,   -- JSON; ints as decimal strings, bytes as 0x hex
                value_wei   TEXT NOT NULL,   -- coin sent along, decimal wei
                sender      TEXT NOT NULL,
                state       TEXT NOT NULL,   -- pending | sent | mined | reverted | failed
                tx_hash     TEXT,
                raw_tx      BLOB,            -- the signed transaction, to rebroadcast
                gas_used    INTEGER,
                block       INTEGER,
                error       TEXT NOT NULL DEFAULT '',
                attempts    INTEGER NOT NULL DEFAULT 0,
                created_ms  INTEGER NOT NULL,
                updated_ms  INTEGER NOT NULL
            );
            CREATE INDEX chain_txs_state ON chain_txs (state, id);
        """,
    ),
    Migration(
        version=5,
        description="dataset transfers: which chunks are held and verified, what each source did",
        sql="""
            -- A row per dataset added here or fetched; chunks live in the chunk store by hash.
            CREATE TABLE transfers (
                dataset_id   BLOB PRIMARY KEY,
                origin       TEXT NOT NULL,      -- 'added' (from a local path) or 'fetched'
                state        TEXT NOT NULL,      -- 'fetching', 'complete', 'failed'
                chunks_total INTEGER NOT NULL,
                bytes_total  INTEGER NOT NULL,
                bytes_moved  INTEGER NOT NULL DEFAULT 0,  -- over the wire, re-sends included
                chunks_moved INTEGER NOT NULL DEFAULT 0,
                error        TEXT,
                created_ms   INTEGER NOT NULL,
                updated_ms   INTEGER NOT NULL
            );
            -- have = 1 once the chunk is in the chunk store, verified against its hash.
            CREATE TABLE transfer_chunks (
                dataset_id BLOB NOT NULL REFERENCES transfers(dataset_id) ON DELETE CASCADE,
                idx        INTEGER NOT NULL,
                size       INTEGER NOT NULL,
                have       INTEGER NOT NULL,
                PRIMARY KEY (dataset_id, idx)
            ) WITHOUT ROWID;
            CREATE TABLE transfer_sources (
                dataset_id BLOB NOT NULL REFERENCES transfers(dataset_id) ON DELETE CASCADE,
                peer_id    TEXT NOT NULL,
                chunks     INTEGER NOT NULL,
                bytes      INTEGER NOT NULL,
                busy_ms    INTEGER NOT NULL,
                failures   INTEGER NOT NULL,
                corrupt    INTEGER NOT NULL,
                PRIMARY KEY (dataset_id, peer_id)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=6,
        description="proof-of-compute: attestations kept for challenges, verdicts, reputation",
        sql="""
            -- The worker's own attestations, and where each segment's checkpoint is kept.
            CREATE TABLE verify_attested (
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                attestation BLOB NOT NULL,   -- the signed envelope as gossiped
                segments    BLOB NOT NULL,   -- msgpack [[state hash, checkpoint blob hash]]
                created_ms  INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx, attempt)
            ) WITHOUT ROWID;
            -- Every verdict seen (a sentry's own carry their evidence record).
            CREATE TABLE verify_verdicts (
                attestation BLOB NOT NULL,   -- attestation id
                sentry      TEXT NOT NULL,
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                worker      TEXT NOT NULL,
                passed      INTEGER NOT NULL,
                reason      TEXT NOT NULL,
                evidence    BLOB,
                verdict     BLOB NOT NULL,   -- the signed envelope
                received_ms INTEGER NOT NULL,
                PRIMARY KEY (attestation, sentry)
            ) WITHOUT ROWID;
            CREATE INDEX verify_verdicts_task ON verify_verdicts(job_id, idx, attempt);
            -- Reputation in parts per million (consensus.verify.verdicts), slow up, fast down.
            CREATE TABLE verify_reputation (
                peer_id    TEXT PRIMARY KEY,
                score      INTEGER NOT NULL,
                passes     INTEGER NOT NULL DEFAULT 0,
                fails      INTEGER NOT NULL DEFAULT 0,
                updated_ms INTEGER NOT NULL
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=7,
        description="settlement in the daemon: job escrow, chain vouchers kept, anchoring state",
        sql="""
            -- Requester: the chain address each worker bid with (signs vouchers to it).
            CREATE TABLE settle_peers (
                peer_id TEXT PRIMARY KEY,
                address TEXT NOT NULL
            ) WITHOUT ROWID;
            -- Requester: a job's escrow in its pool: 'new' -> 'funded' -> 'leaving' -> 'returned'.
            CREATE TABLE settle_escrow (
                job_id       BLOB PRIMARY KEY,
                funded_wei   TEXT NOT NULL,
                returned_wei TEXT NOT NULL DEFAULT '0',
                state        TEXT NOT NULL,
                error        TEXT NOT NULL DEFAULT '',
                updated_ms   INTEGER NOT NULL
            ) WITHOUT ROWID;
            -- Worker: the latest requester-signed chain voucher per task attempt.
            CREATE TABLE settle_vouchers (
                job_id     BLOB NOT NULL,
                idx        INTEGER NOT NULL,
                attempt    INTEGER NOT NULL,
                requester  TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                sig        BLOB NOT NULL,
                ended_ms   INTEGER,              -- set when the task ended: ready to anchor
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx, attempt)
            ) WITHOUT ROWID;
            -- Sentry: the anchoring machine, saved whole after every step (one row).
            CREATE TABLE settle_anchoring (
                id         INTEGER PRIMARY KEY CHECK (id = 1),
                state      BLOB NOT NULL,
                updated_ms INTEGER NOT NULL
            );
        """,
    ),
    Migration(
        version=8,
        description="dataset grants (who may fetch what) and route probes (what each link did)",
        sql="""
            -- peer '*' = anyone; a daemon serves a dataset only to the peers granted it.
            CREATE TABLE transfer_grants (
                dataset_id BLOB NOT NULL,
                peer       TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                PRIMARY KEY (dataset_id, peer)
            ) WITHOUT ROWID;
            -- The latest probe of each candidate source and the window chosen for it.
            CREATE TABLE transfer_probes (
                dataset_id BLOB NOT NULL,
                peer_id    TEXT NOT NULL,
                route      TEXT NOT NULL,     -- the address the connection uses
                state      TEXT NOT NULL,     -- used, standby, slow, lacks, unreachable
                rtt_us     INTEGER,           -- ~1 KB each way over libp2p; NULL: no answer
                rate_bps   INTEGER NOT NULL,  -- chunk bytes per second measured from it
                win        INTEGER NOT NULL,  -- requests in flight chosen from rtt and rate
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (dataset_id, peer_id)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=9,
        description="peers the operator blocked (idlegrid peers block), kept across restarts",
        sql="""
            CREATE TABLE peer_blocks (
                peer_id  TEXT PRIMARY KEY,
                since_ms INTEGER NOT NULL,
                until_ms INTEGER,              -- NULL: until unblocked
                reason   TEXT NOT NULL DEFAULT ''
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=10,
        description="requester: the anchored entries it disputes, kept across restarts",
        sql="""
            -- 'found' (written before the dispute is sent) -> 'disputed' -> 'answered' or
            -- 'voided'; 'missed' when the window closed first. One row per (epoch, leaf), so a
            -- restart never disputes twice nor forgets a dispute it must void.
            CREATE TABLE settle_disputes (
                epoch      INTEGER NOT NULL,
                leaf       BLOB NOT NULL,
                worker     TEXT NOT NULL,
                job        BLOB NOT NULL,     -- bytes32, as anchored
                task       BLOB NOT NULL,     -- bytes32: task << 32 | attempt
                amount_wei TEXT NOT NULL,
                proof      BLOB NOT NULL,     -- the sibling hashes, 32 bytes each
                reason     TEXT NOT NULL,     -- never signed | above signed | above cap | by hand
                detail     TEXT NOT NULL,
                state      TEXT NOT NULL,
                answer_by  INTEGER,           -- chain seconds by which the anchorer must answer
                error      TEXT NOT NULL DEFAULT '',
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (epoch, leaf)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=11,
        description="sentries' QoS reports on workers (a flag outlives a restart until it expires)",
        sql="""
            -- The latest report of each sentry on each worker (consensus.verify.qos.QosReport).
            CREATE TABLE verify_qos (
                worker      TEXT NOT NULL,
                sentry      TEXT NOT NULL,
                flagged     INTEGER NOT NULL,
                measured    INTEGER NOT NULL,
                report      BLOB NOT NULL,      -- the body's wire map (msgpack)
                expires_ms  INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                PRIMARY KEY (worker, sentry)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=12,
        description="proof-of-compute: escalations of cross-class misses, as every node heard them",
        sql="""
            -- One row per (attestation, escalating sentry): a cross-class miss, never a fail.
            CREATE TABLE verify_escalations (
                attestation BLOB NOT NULL,   -- attestation id
                sentry      TEXT NOT NULL,
                job_id      BLOB NOT NULL,
                idx         INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                worker      TEXT NOT NULL,
                segments    TEXT NOT NULL,   -- the missed segments, JSON
                reason      TEXT NOT NULL,
                evidence    BLOB,            -- the escalating sentry's own record
                escalation  BLOB NOT NULL,   -- the signed envelope
                received_ms INTEGER NOT NULL,
                PRIMARY KEY (attestation, sentry)
            ) WITHOUT ROWID;
            CREATE INDEX verify_escalations_task ON verify_escalations(job_id, idx, attempt);
        """,
    ),
    Migration(
        version=13,
        description="settlement spends: what a requester signed per line, what a worker was given",
        sql="""
            -- Requester: the largest chain voucher it signed per line; its Spend is their sum,
            -- so a restart never signs a smaller one. Written before each voucher leaves.
            CREATE TABLE settle_spend (
                job_id     BLOB NOT NULL,
                idx        INTEGER NOT NULL,
                attempt    INTEGER NOT NULL,
                worker     TEXT NOT NULL,     -- chain address
                amount_wei TEXT NOT NULL,
                PRIMARY KEY (job_id, idx, attempt, worker)
            ) WITHOUT ROWID;
            -- Worker: the requester's Spend that came with the voucher kept (sent on to anchorers).
            ALTER TABLE settle_vouchers ADD COLUMN spend_wei TEXT NOT NULL DEFAULT '0';
            ALTER TABLE settle_vouchers ADD COLUMN spend_sig BLOB NOT NULL DEFAULT x'';
        """,
    ),
    Migration(
        version=14,
        description="worker: requesters in arrears; requester: spends per deployment",
        sql="""
            ALTER TABLE settle_vouchers ADD COLUMN requester_peer TEXT NOT NULL DEFAULT '';
            -- the largest amount an anchor on chain showed for the line (its entries)
            ALTER TABLE settle_vouchers ADD COLUMN shown_wei TEXT NOT NULL DEFAULT '0';
            -- the chain's anchor count and the requester pool's debited, read while the line
            -- ran; the last read before it ended stays (NULL: never read, never judged)
            ALTER TABLE settle_vouchers ADD COLUMN anchors_before INTEGER;
            ALTER TABLE settle_vouchers ADD COLUMN debited_before TEXT;
            -- Requester: the deployment a line's spend counts for ("chain id:contract");
            -- rows from before ('') count for every deployment, as they did
            CREATE TABLE settle_spend_v14 (
                job_id     BLOB NOT NULL,
                idx        INTEGER NOT NULL,
                attempt    INTEGER NOT NULL,
                worker     TEXT NOT NULL,     -- chain address
                amount_wei TEXT NOT NULL,
                deployment TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (job_id, idx, attempt, worker, deployment)
            ) WITHOUT ROWID;
            INSERT INTO settle_spend_v14 (job_id, idx, attempt, worker, amount_wei)
                SELECT job_id, idx, attempt, worker, amount_wei FROM settle_spend;
            DROP TABLE settle_spend;
            ALTER TABLE settle_spend_v14 RENAME TO settle_spend;
        """,
    ),
    Migration(
        version=15,
        description="worker: datasets fetched for tasks, a cache deleted oldest use first",
        sql="""
            -- A dataset this node fetched for a task (not added or fetched by its operator),
            -- and when a task last used it; gone with its transfer row.
            CREATE TABLE dataset_cache (
                dataset_id BLOB PRIMARY KEY
                           REFERENCES transfers(dataset_id) ON DELETE CASCADE,
                used_ms    INTEGER NOT NULL
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=16,
        description="worker: the requester's cap on a line it failed over",
        sql="""
            -- the amount a genuine cap (signed by the line's requester) closed the line at;
            -- NULL: none heard. The line's due is then the lower of it and the voucher.
            ALTER TABLE settle_vouchers ADD COLUMN capped_wei TEXT;
        """,
    ),
    Migration(
        version=17,
        description="sentry: each final epoch's entries, for anchorers that follow later",
        sql="""
            -- One row per final epoch an anchoring sentry built on (its own, or another's it
            -- followed): served on /idlegrid/settle/epochs/1 to sentries catching up, which
            -- check every epoch against the roots on chain. entries: msgpack rows.
            CREATE TABLE settle_epochs (
                idx          INTEGER PRIMARY KEY,
                entries_root BLOB NOT NULL,
                entries      BLOB NOT NULL
            );
        """,
    ),
    Migration(
        version=18,
        description="entries carry previous: a disputed entry's, and no epochs of the old form",
        sql="""
            -- the line's amount in the last final anchor, as the entry names it
            ALTER TABLE settle_disputes ADD COLUMN previous_wei TEXT NOT NULL DEFAULT '0';
            -- epochs kept before entries carried `previous`: their leaves prove to no anchor
            -- of a contract that audits (a new deployment), so they are neither served nor used
            DELETE FROM settle_epochs;
        """,
    ),
    Migration(
        version=19,
        description="the settlement contract's epoch events, scanned once (rpc chains)",
        sql="""
            -- How far this node scanned a contract's epoch events, from which block, and the
            -- hash of the last block read: a restart (or a wallet command) reads only the
            -- blocks since, and a chain that no longer has that block drops the scan.
            CREATE TABLE chain_event_scans (
                chain_id     INTEGER NOT NULL,
                contract     TEXT NOT NULL,
                start        INTEGER NOT NULL,
                scanned      INTEGER NOT NULL,
                scanned_hash BLOB NOT NULL,
                PRIMARY KEY (chain_id, contract)
            ) WITHOUT ROWID;
            -- The logs read, as the endpoint gave them (JSON), decoded when loaded.
            CREATE TABLE chain_events (
                chain_id  INTEGER NOT NULL,
                contract  TEXT NOT NULL,
                block     INTEGER NOT NULL,
                log_index INTEGER NOT NULL,
                log       TEXT NOT NULL,
                PRIMARY KEY (chain_id, contract, block, log_index)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=20,
        description="sentry: the final epoch that last anchored each line",
        sql="""
            -- Kept as settle_epochs rows are written: the anchoring sentry answers a dispute
            -- of an entry's `previous` with the line's entry in that epoch at once, however
            -- long ago the line was anchored, instead of reading back through every epoch
            -- (a bonded watcher could dispute many old lines). Epochs kept before this have
            -- no rows here and are still searched.
            CREATE TABLE settle_lines (
                job       BLOB NOT NULL,
                task      BLOB NOT NULL,
                worker    BLOB NOT NULL,
                requester BLOB NOT NULL,
                idx       INTEGER NOT NULL,
                PRIMARY KEY (job, task, worker, requester)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=21,
        description="sentry: the final amount of each line the anchoring machine let go",
        sql="""
            -- The anchoring machine keeps only open lines in memory. A line anchored in full
            -- is written here before it is dropped, and comes back as the line's base when a
            -- voucher or another anchorer's entry names it again (a resent voucher must not
            -- be paid twice). Decimal wei: amounts go beyond 64 bits.
            CREATE TABLE settle_bases (
                job       BLOB NOT NULL,
                task      BLOB NOT NULL,
                worker    BLOB NOT NULL,
                requester BLOB NOT NULL,
                amount    TEXT NOT NULL,
                PRIMARY KEY (job, task, worker)
            ) WITHOUT ROWID;
        """,
    ),
    Migration(
        version=22,
        description="requester: workers kept from a task they failed, until its job is over",
        sql="""
            -- A worker that failed verification of one of our tasks must not win that task's
            -- re-auction. This was kept in memory only, so a restarted requester could hand
            -- the task straight back to the cheat. Rows go once until_ms has passed. Failing
            -- verdicts heard before this migration are carried over.
            CREATE TABLE verify_excluded (
                job_id   BLOB NOT NULL,
                idx      INTEGER NOT NULL,
                worker   TEXT NOT NULL,
                until_ms INTEGER NOT NULL,
                PRIMARY KEY (job_id, idx, worker)
            ) WITHOUT ROWID;
            INSERT OR IGNORE INTO verify_excluded
                SELECT v.job_id, v.idx, v.worker, j.deadline_ms + 3600000
                FROM verify_verdicts v JOIN jobs j ON j.job_id = v.job_id
                WHERE v.passed = 0;
        """,
    ),
    Migration(
        version=23,
        description="anchoring sentry: the caps it took, to send again after a restart",
        sql="""
            -- A worker away while its requester gossiped a cap resends its voucher for a day;
            -- the anchorer that took the cap sends it back on refusing one. The signed caps
            -- were kept in memory only, so after the anchorer's restart none was sent and the
            -- worker went on resending. The newest 4096 are kept (node/chain/cap_echo.py).
            CREATE TABLE settle_caps_taken (
                job      BLOB NOT NULL,
                task     BLOB NOT NULL,
                worker   BLOB NOT NULL,
                cap      BLOB NOT NULL,     -- the requester's VoucherCap body (msgpack)
                taken_ms INTEGER NOT NULL,
                PRIMARY KEY (job, task, worker)
            ) WITHOUT ROWID;
            CREATE INDEX settle_caps_taken_by_age ON settle_caps_taken (taken_ms);
        """,
    ),
)


def validate_migrations(migrations: Sequence[Migration]) -> None:
    """Reject a migration list whose versions are not exactly 1..N in order.

    A gap or a duplicate would make ``user_version`` ambiguous (which steps has a database
    at version 3 seen?), so this is checked before anything touches a database.

    Raises:
        ValueError: naming the first out-of-place version.
    """
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migrations must be numbered 1..N without gaps: expected version {expected}, "
                f"found {migration.version} ({migration.description!r})"
            )


def user_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in the database header."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Bring the database up to the newest of ``migrations``; return the resulting version.

    Args:
        conn: a connection in autocommit mode (``isolation_level=None``) with no transaction
            open, since each step opens its own.
        migrations: the full history, versions 1..N.

    Raises:
        SchemaTooNew: the database is already past version N.
        ValueError: ``migrations`` is not numbered 1..N.
        sqlite3.Error: a step failed; it was rolled back and the database is left at the
            version before it. This is also what the loser sees if two processes migrate
            the same fresh file at once; reopening then finds the winner's version.
    """
    validate_migrations(migrations)
    supported = len(migrations)
    current = user_version(conn)
    if current > supported:
        raise SchemaTooNew(current, supported)
    for migration in migrations[current:]:
        _apply_one(conn, migration)
    return user_version(conn)


def _apply_one(conn: sqlite3.Connection, migration: Migration) -> None:
    # executescript() first COMMITs any transaction already open on the connection (Python
    # 3.11 does this even with isolation_level=None), so BEGIN has to be part of the script
    # itself. The version is a validated int: PRAGMA values cannot be bound as parameters.
    script = (
        "BEGIN IMMEDIATE;\n"
        f"{migration.sql}\n;\n"
        f"PRAGMA user_version = {int(migration.version)};\n"
        "COMMIT;\n"
    )
    try:
        conn.executescript(script)
    except BaseException:
        # A failed script stops at the failing statement with our transaction still open.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


validate_migrations(MIGRATIONS)
