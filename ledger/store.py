"""The ledger on PostgreSQL: one batch = one transaction. ``Ledger.steps`` is a batch as
the query strings it sends (a generator): ``submit`` runs them waiting in its thread,
the trio batch writer sends them from trio (libpq non-blocking).

A batch of new holds whose accounts and chain head this connection's last commit left
(``_submit_fast``: always so under one writer) is one round trip: ``begin; <lock its
accounts>; <its writes, guarded>; commit``; a guard that finds another writer moved
something fails the statement (nothing written) and the batch runs as below.

Otherwise per batch, whatever its size: two round trips. ``begin;`` and one read statement (tagged
rows: the transfers and failed ids, the accounts FOR UPDATE in id order, the pending states
FOR UPDATE, the chain head FOR UPDATE with the event ids already stored), then one write
statement over arrays (unnest) whose WITH parts fill every table, followed by ``; commit``
in the same query string, with synchronous_commit as the server has it (on): one WAL
flush for a batch of authorizations. Each round trip costs psycopg work, a socket send
and a wait the writer cannot use (~100-250 µs of CPU and 0.3-4 ms of wall measured on a
loaded 2-core machine; six per batch before): hence as few as the engine allows (it
needs the reads' rows before it can compute the writes). Both statements are prepared
once per session and sent as ``execute <name>(<literals>)``: parsing and planning them
every batch cost PostgreSQL more than running them (``_BEGIN`` keeps their plans sane).
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import psycopg

from . import events as ev
from .engine import Engine, PendingInfo
from .types import (
    AMOUNT_MAX,
    BATCH_MAX,
    ID_MAX,
    Account,
    AccountBalance,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Event,
    LedgerError,
    StoredTransfer,
    Transfer,
    TransferFlags,
)

R = CreateTransferResult
Row = tuple[Any, ...]  # a psycopg row: the columns' Python values
Cursor = psycopg.Cursor[Row]
PGresult = psycopg.pq.abc.PGresult
_U = uuid.UUID
# a plain int: int & IntFlag builds an IntFlag in Python (~1.5 µs per transfer per batch)
_POST_VOID = int(TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
_INTRANS = psycopg.pq.TransactionStatus.INTRANS
_INERROR = psycopg.pq.TransactionStatus.INERROR
_COMMAND_OK = psycopg.pq.ExecStatus.COMMAND_OK
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
# PGresult.get_value as the batch's read uses it: bytes, or None for a NULL only where
# the columns may be NULL (pending_id, expires_at_ns). Built once: subscripting Callable
# in the batch made a new generic alias each time (~1 µs, the read's parsing's largest).
_GetValue = Callable[[int, int], bytes]


# Added to the statement timeout for the client-side TCP bounds: the server gets the
# first chance to cancel a slow statement.
TCP_MARGIN_MS = 5000


def tcp_bounds(statement_timeout_ms: int) -> dict[str, Any]:
    """libpq settings that bound a connection's waits on the network. statement_timeout
    is enforced by the server only: if the network to it is gone (partition, dead host)
    a thread would sit in recv() for the kernel's ~15 min retransmission timeout. TCP
    keepalives (idle socket waiting for a result) and tcp_user_timeout (unacknowledged
    data) bound that wait to about the statement timeout plus TCP_MARGIN_MS."""
    bound_ms = int(statement_timeout_ms) + TCP_MARGIN_MS
    idle_s = max(1, bound_ms // 2000)  # first probe after half the bound,
    count = 3                          # then 3 probes over the other half
    interval_s = max(1, (bound_ms // 1000 - idle_s) // count)
    return dict(keepalives=1, keepalives_idle=idle_s, keepalives_interval=interval_s,
                keepalives_count=count, tcp_user_timeout=bound_ms)


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def _u(i: int) -> uuid.UUID:
    """uuid.UUID(int=i) without its argument parsing (~4x faster; ids are range-checked
    by the engine or the caller before they get here)."""
    u = _new(_U)
    _set(u, "int", i)
    _set(u, "is_safe", _UNKNOWN)
    return u


def _ua(ids: Iterable[int | None]) -> str:
    """A uuid[] literal built in one join: per-element dumpers cost ~10 µs per transfer.
    ``to_bytes(16).hex()``: the 32 hex digits of f"{i:032x}" in half its time (a tenth
    of the writer's samples were here), and an id outside 128 bits raises here instead
    of reaching PostgreSQL."""
    return "{" + ",".join([i.to_bytes(16, "big").hex() if i else "NULL" for i in ids]) + "}"


_NULL_UUID = "0" * 32


def _ub(xs: list[bytes]) -> str:
    """``_ua`` of ids given as their 16 bytes (``events.Columns``): one ``hex`` call with
    a separator every 16 bytes; an id 0 (none) is NULL, as in ``_ua``."""
    return "{" + b"".join(xs).hex(",", 16).replace(_NULL_UUID, "NULL") + "}"


_INT_TEXT = int.__repr__  # an int's digits (an IntFlag's, a bool's too); TypeError else


def _ia(xs: Sequence[int | None]) -> str:
    """A bigint[]/int[] literal: its elements' texts in one ``map`` (C) when none is
    NULL, as in nearly every column (the fast write's balances of accounts without a
    limit are all NULL: the first one tells); else element by element."""
    if xs and xs[0] is not None:
        try:
            return "{" + ",".join(map(_INT_TEXT, xs)) + "}"
        except TypeError:  # a None further on
            pass
    return "{" + ",".join(["NULL" if x is None else str(int(x)) for x in xs]) + "}"


def _ta(xs: Iterable[str]) -> str:
    """A text[] literal: each element double-quoted, its backslashes and quotes escaped.
    psycopg's client-side list quoting costs ~50 µs per event payload; this ~1 µs. The
    elements are joined first (by NUL, which no text PostgreSQL stores holds) and
    escaped in one pass over the whole: a batch's event payloads in a few C loops
    instead of three string operations each."""
    xs = xs if isinstance(xs, list) else list(xs)
    if not xs:
        return "{}"
    joined = "\x00".join(xs)
    if joined.count("\x00") != len(xs) - 1:  # a NUL in a text: PostgreSQL refuses it
        return "{" + ",".join(['"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
                               for x in xs]) + "}"
    return ('{"' + joined.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", '","')
            + '"}')


def _ba(xs: Iterable[bytes]) -> str:
    """A bytea[] literal: each element ``\\x<hex>`` (its backslash escaped in the array).
    MACs (all 32 bytes) in one ``hex`` call with a separator every 32 bytes."""
    xs = xs if isinstance(xs, list) else list(xs)
    joined = b"".join(xs)
    if xs and len(joined) == 32 * len(xs) and min(map(len, xs)) == 32:  # each 32 bytes
        return '{"\\\\x' + joined.hex(",", 32).replace(",", '","\\\\x') + '"}'
    return "{" + ",".join(['"\\\\x' + x.hex() + '"' for x in xs]) + "}"


def _uid(text: bytes | None) -> int:
    """A uuid in PostgreSQL's text form as an int (NULL: 0)."""
    return int(text.replace(b"-", b""), 16) if text is not None else 0


def _error(res: psycopg.pq.abc.PGresult) -> str:
    return (res.error_message or b"").decode("utf-8", "replace").strip()


def _i(u: uuid.UUID | None) -> int:
    return u.int if u is not None else 0


@dataclass(frozen=True, slots=True)
class Request:
    """What one caller submits: transfers (a linked chain stays inside one request) and the
    events to append in the same transaction — ``on_success`` when every transfer is
    ``created`` or ``exists``, ``on_failure`` otherwise. Event ids already stored are skipped,
    so a retry with the same ids writes nothing twice. An event's payload may be its
    canonical text (``Event``), built by a caller who knows its shape (a template is ~4x
    cheaper than a dict and its encoding); the writer checks it (size, PAN)."""

    transfers: tuple[Transfer, ...] = ()
    on_success: tuple[Event, ...] = ()
    on_failure: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    results: tuple[CreateTransferResult, ...]
    events_written: tuple[int, ...]  # seq of each event written for this request

    @property
    def ok(self) -> bool:
        return _ok(self.results)


_DONE = frozenset((R.CREATED, R.EXISTS))
_OK_CODES = frozenset((R.CREATED, R.EXISTS, R.LINKED_EVENT_FAILED))


def _ok(results: Sequence[CreateTransferResult]) -> bool:
    """Every transfer is there: created now or before. A retried linked chain answers
    ``exists`` on its first transfer and ``linked_event_failed`` on the rest (``exists``
    breaks a chain, as in TigerBeetle); chains are atomic, so that also means "all there"."""
    if not results:  # events only
        return True
    return all(r in _OK_CODES for r in results) and any(r in _DONE for r in results)


_SELECT_TRANSFERS = (
    "select id, debit_account_id, credit_account_id, amount, coalesce(pending_id, "
    "'00000000-0000-0000-0000-000000000000'::uuid), ledger, code, flags, timeout_s, ts "
    "from transfers where id = any(%s::uuid[])")


def _stored(row: Row) -> StoredTransfer:
    # columns as in _SELECT_TRANSFERS
    return StoredTransfer(row[0].int, row[1].int, row[2].int, row[3], row[5], row[6], row[7],
                          row[4].int, row[8], row[9])


class Ledger:
    """Synchronous ledger API over one connection (not thread-safe: one user at a time).

    ``mac``: the event MAC function (bytes -> 32 bytes); needed only to append events.
    ``clock_ns``: UTC nanoseconds; injectable for tests of expiry.
    """

    def __init__(self, dsn: str, *, mac: ev.MacFunction | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, migrate: bool = False,
                 schema: str | None = None,
                 statement_timeout_ms: int = 30_000, fast: bool = True) -> None:
        # standard_conforming_strings: the batch's literals (``_lit``) rely on it; the
        # batch's read parses bytea in hex
        options = (f"-c statement_timeout={int(statement_timeout_ms)}"
                   f" -c lock_timeout={int(statement_timeout_ms)}"
                   " -c standard_conforming_strings=on -c bytea_output=hex")
        if schema is not None:
            if not schema.isidentifier():
                raise LedgerError(f"bad schema name {schema!r}")
            options += f" -c search_path={schema}"
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, options=options,
                                        **tcp_bounds(statement_timeout_ms))
        except psycopg.Error as e:
            raise LedgerError(f"cannot connect to the ledger database: {e}") from e
        self.mac = mac
        self.clock_ns = clock_ns
        self._last_ns = 0
        # the batch's statements prepared on this session (text -> name), marked once the
        # query string with the PREPARE ran; names are never reused, so a PREPARE that ran
        # in a batch that failed only leaves an unused statement (at most one per shape)
        self._prepared: dict[str, str] = {}
        self._named = 0
        # What this connection's last commit left (``_submit_fast``): the chain head and
        # the accounts it read or wrote (ledger, code and flags never change; balances
        # are checked by the write where they matter). Another writer may have moved
        # either since: the fast write then fails its guard and the batch runs again the
        # usual way, which reads them afresh.
        self._head: tuple[int, bytes] | None = None
        self._new_head: tuple[int, bytes] | None = None  # the batch's, once it commits
        self._accounts: dict[int, AccountBalance] = {}
        self._misses = 0  # fast writes in a row whose guard failed
        self._skip = 0  # batches left to run the usual way before the next fast try
        self.fast_batches = self.fast_misses = 0  # counted for tests and benchmarks
        self.fast = fast  # False: every batch the usual way (reads, then writes)
        self._missed = False  # the batch's fast write missed: its transaction is aborted
        if migrate:
            from .schema import migrate as _migrate
            _migrate(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accounts --------------------------------------------------------------------------

    def create_accounts(self, accounts: Sequence[Account]) -> list[CreateAccountResult]:
        A = CreateAccountResult
        if len(accounts) > BATCH_MAX:
            raise LedgerError(f"at most {BATCH_MAX} accounts per call")
        results: list[CreateAccountResult | None] = [None] * len(accounts)
        todo = []
        for i, a in enumerate(accounts):
            if a.id == 0:
                results[i] = A.ID_MUST_NOT_BE_ZERO
            elif a.id < 0 or a.id >= ID_MAX:
                results[i] = A.ID_MUST_NOT_BE_INT_MAX
            elif (a.flags & 3) == 3:
                results[i] = A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
            elif a.ledger <= 0:
                results[i] = A.LEDGER_MUST_NOT_BE_ZERO
            elif a.code <= 0:
                results[i] = A.CODE_MUST_NOT_BE_ZERO
            else:
                todo.append(i)
        if todo:
            with self._tx() as cur:
                cur.execute(
                    "insert into accounts (id, ledger, code, flags) "
                    "select * from unnest(%b::uuid[], %b::int[], %b::int[], %b::int[]) "
                    "on conflict (id) do nothing returning id",
                    ([_u(accounts[i].id) for i in todo], [accounts[i].ledger for i in todo],
                     [accounts[i].code for i in todo], [int(accounts[i].flags) for i in todo]))
                inserted = {r[0].int for r in cur.fetchall()}
                cur.execute("select id, ledger, code, flags from accounts where id = any(%b)",
                            ([_u(accounts[i].id) for i in todo],))
                stored = {r[0].int: r for r in cur.fetchall()}
            for i in todo:
                a = accounts[i]
                if a.id in inserted:
                    inserted.discard(a.id)
                    results[i] = A.CREATED
                    continue
                _, ledger, code, flags = stored[a.id]
                if int(a.flags) != flags:
                    results[i] = A.EXISTS_WITH_DIFFERENT_FLAGS
                elif a.ledger != ledger:
                    results[i] = A.EXISTS_WITH_DIFFERENT_LEDGER
                elif a.code != code:
                    results[i] = A.EXISTS_WITH_DIFFERENT_CODE
                else:
                    results[i] = A.EXISTS
        return results  # type: ignore[return-value]

    def lookup_accounts(self, ids: Iterable[int]) -> list[AccountBalance]:
        ids = [i for i in ids if 0 < i < ID_MAX]
        rows = self.conn.execute(
            "select id, ledger, code, flags, debits_pending, debits_posted, credits_pending, "
            "credits_posted from accounts where id = any(%b)", ([_u(i) for i in ids],)).fetchall()
        by_id = {r[0].int: AccountBalance(r[0].int, *r[1:]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def lookup_transfers(self, ids: Iterable[int]) -> list[StoredTransfer]:
        ids = [i for i in ids if 0 < i < ID_MAX]
        rows = self.conn.execute(_SELECT_TRANSFERS, (_ua(ids),)).fetchall()
        by_id = {r[0].int: _stored(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def pending_state(self, pending_id: int) -> str | None:
        row = self.conn.execute("select state from pending_transfers where id = %s",
                                (_u(pending_id),)).fetchone()
        return row[0] if row else None

    def payment_events(self, payment_id: int, limit: int = 1000) -> list[ev.StoredEvent]:
        rows = self.conn.execute(
            "select seq, id, type, payment_id, transfer_id, occurred_at, payload, prev_mac, "
            "mac from events where payment_id = %s order by seq limit %s",
            (_u(payment_id), limit)).fetchall()
        return [ev.StoredEvent(r[0], r[1].int, r[2], _i(r[3]) or None, _i(r[4]) or None,
                               ev.us_from_datetime(r[5]), r[6], bytes(r[7]), bytes(r[8]))
                for r in rows]

    def payment_state(self, payment_id: int) -> ev.PaymentState:
        """A payment's state, rebuilt by replaying its events."""
        return ev.replay(payment_id, self.payment_events(payment_id))

    # -- transfers and events --------------------------------------------------------------

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateTransferResult]:
        return list(self.submit([Request(tuple(transfers))])[0].results)

    def append_events(self, events: Sequence[Event]) -> tuple[int, ...]:
        """Appends events with no transfer (received, scored, routed, ...). Returns seqs."""
        return self.submit([Request((), tuple(events))])[0].events_written

    def submit(self, requests: Sequence[Request],
               checked: dict[int, str] | None = None) -> list[Outcome]:
        """Applies many callers' requests in one transaction. Raises LedgerError when the
        transaction did not commit (outcome of the whole batch then unknown: retry).
        ``checked``: see ``events.chain`` (the writer's already checked payloads).

        ``steps`` run with this thread waiting for each answer (``exec_``: libpq waits
        without the GIL). The batched writer runs the same steps from trio instead."""
        steps = self.steps(requests, checked)
        pg = self.conn.pgconn
        try:
            query = next(steps)
            while True:
                query = steps.send(pg.exec_(query))
        except StopIteration as done:
            return cast(list[Outcome], done.value)
        except BaseException as e:
            self._rollback()
            if isinstance(e, psycopg.Error):
                raise LedgerError(
                    f"ledger batch not committed: {type(e).__name__}: {e}") from e
            raise

    def steps(self, requests: Sequence[Request], checked: dict[int, str] | None = None,
              ) -> Generator[bytes, PGresult, list[Outcome]]:
        """``submit`` as the query strings it sends: yields each and is sent back its
        last result (what libpq's PQexec returns); returns the outcomes. Whoever runs it
        ends the transaction with a rollback when it raises (``rollback_needed``).

        One round trip when ``_submit_fast`` can (``begin; <lock>; <guarded writes>;
        commit``), else two: ``begin; <the reads>`` and ``<the writes>; commit``, each
        one simple-protocol query string, so BEGIN and COMMIT travel with a statement.
        The reads and the writes are statements prepared on the session (``_call``:
        parsed and planned once, not every batch), executed with their values as
        literals (``_lit``), under the settings of ``_BEGIN``."""
        if sum(len(r.transfers) for r in requests) > BATCH_MAX * 4:
            raise LedgerError("batch too large")
        now = max(self.clock_ns(), self._last_ns + 1)
        try:
            self._missed = False
            done = (yield from self._submit_fast(requests, now, checked)) if self.fast else None
            if done is None:  # a miss left its transaction to end: rolled back first
                done = yield from self._submit(requests, now, checked,
                                               "rollback; " if self._missed else "")
            outcomes, used = done
        except BaseException:
            self._forget()
            raise
        self._last_ns = max(self._last_ns, now + used)
        return outcomes

    def rollback_needed(self) -> bool:
        """A batch that raised left its transaction open (the connection is fine)."""
        conn = self.conn
        return (not (conn.closed or conn.broken)
                and conn.info.transaction_status in (_INTRANS, _INERROR))

    def _rollback(self) -> None:
        """Ends a transaction the batch's BEGIN opened and its COMMIT did not close (an
        error in between). A broken connection has none left: the writer reconnects."""
        if self.rollback_needed():
            with contextlib.suppress(psycopg.Error):  # gone: as good as rolled back
                self.conn.execute("rollback")

    def _call(self, sql: str, args: list[str],
              types: str = "") -> tuple[str, tuple[str, str] | None]:
        """``execute <name>(<args>)`` of ``sql`` (``$n`` parameters) prepared on this
        session, preceded the first time by its PREPARE in the same query string; the
        args are literals. Returns the text and, for a new statement, (sql, name) for
        ``_mark`` once the query string ran."""
        name = self._prepared.get(sql)
        if name is not None:
            return f"execute {name}({', '.join(args)})", None
        name = f"payswitch_ledger_{self._named}"
        self._named += 1
        return (f"prepare {name}{types} as {sql}; execute {name}({', '.join(args)})",
                (sql, name))

    def _mark(self, new: tuple[str, str] | None) -> None:
        if new is not None:
            self._prepared[new[0]] = new[1]

    def expire_pending(self, limit: int = 1000) -> int:
        """The expiry job: voids holds whose timeout has passed. Returns how many."""
        now = max(self.clock_ns(), self._last_ns + 1)
        try:
            with self._tx() as cur:
                cur.execute(
                    "select id from pending_transfers where state = 'pending' and "
                    "expires_at_ns <= %s order by expires_at_ns limit %s", (now, limit))
                due = [r[0].int for r in cur.fetchall()]
                cur.execute(_SELECT_TRANSFERS, (_ua(due),))
                transfers = {r[0].int: _stored(r) for r in cur.fetchall()}
                if not transfers:
                    return 0
                acct_ids = {t.debit_account_id for t in transfers.values()} | {
                    t.credit_account_id for t in transfers.values()}
                accounts = self._lock_accounts(cur, acct_ids)
                pending = self._lock_pending(cur, transfers.keys())
                eng = Engine(accounts, transfers, set(), pending, now)
                n = sum(eng.expire(pid) for pid in sorted(transfers))
                _execute_writes(cur, _writes(eng))
        except psycopg.Error as e:
            raise LedgerError(f"expiry batch not committed: {e}") from e
        return n

    # -- internals -------------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self.conn)

    @staticmethod
    def _lock_accounts(cur: Cursor, ids: Iterable[int]) -> dict[int, AccountBalance]:
        cur.execute(
            "select id, ledger, code, flags, debits_pending, debits_posted, credits_pending, "
            "credits_posted from accounts where id = any(%s::uuid[]) order by id for update",
            (_ua(ids),))
        return {r[0].int: AccountBalance(r[0].int, *r[1:]) for r in cur.fetchall()}

    @staticmethod
    def _lock_pending(cur: Cursor, ids: Iterable[int]) -> dict[int, PendingInfo]:
        cur.execute("select id, state, expires_at_ns from pending_transfers "
                    "where id = any(%s::uuid[]) order by id for update", (_ua(ids),))
        return {r[0].int: PendingInfo(r[1], r[2]) for r in cur.fetchall()}

    def _submit(self, requests: Sequence[Request], now: int,
                checked: dict[int, str] | None,
                first: str = "") -> Generator[bytes, PGresult, tuple[list[Outcome], int]]:
        all_t = [t for r in requests for t in r.transfers]
        ids = {t.id for t in all_t if 0 < t.id < ID_MAX}
        pids = {t.pending_id for t in all_t  # int(): IntFlag's & runs in Python
                if int(t.flags) & _POST_VOID and 0 < t.pending_id < ID_MAX}
        acct_ids = {a for t in all_t for a in (t.debit_account_id, t.credit_account_id)
                    if 0 < a < ID_MAX}
        # every event the batch may write (on success or failure): whether stored already
        ev_ids = {e.id: None for r in requests for e in (*r.on_success, *r.on_failure)}
        transfers: dict[int, StoredTransfer] = {}
        failed: set[int] = set()
        accounts: dict[int, AccountBalance] = {}
        pending: dict[int, PendingInfo] = {}
        head: tuple[int, bytes, set[int]] | None = None
        read, new = self._call(_read_sql(bool(all_t), bool(ev_ids)), [
            _lit(_ua(ids | pids)), _lit(_ua(ids)), _lit(_ua(pids)), _lit(_ua(acct_ids)),
            _lit(_ua(ev_ids))], _READ_TYPES)
        # straight through libpq, as the write: the last result is the read's rows (text)
        rows = yield (first + _BEGIN + read).encode()
        if rows.status != _TUPLES_OK:
            raise LedgerError(f"ledger batch not committed: {_error(rows)}")
        self._mark(new)
        v = cast(_GetValue, rows.get_value)
        for k in range(rows.ntuples):
            tag = v(k, 0)
            if tag == b"t":
                i = _uid(v(k, 1))
                transfers[i] = StoredTransfer(
                    i, _uid(v(k, 2)), _uid(v(k, 3)), int(v(k, 5)), int(v(k, 9)),
                    int(v(k, 10)), int(v(k, 11)), _uid(v(k, 4)), int(v(k, 12)), int(v(k, 6)))
            elif tag == b"a":
                i = _uid(v(k, 1))
                accounts[i] = AccountBalance(
                    i, int(v(k, 9)), int(v(k, 10)), int(v(k, 11)), int(v(k, 5)),
                    int(v(k, 6)), int(v(k, 7)), int(v(k, 8)))
            elif tag == b"p":
                exp = v(k, 5)
                pending[_uid(v(k, 1))] = PendingInfo(v(k, 13).decode(),
                                                     None if exp is None else int(exp))
            elif tag == b"f":
                failed.add(_uid(v(k, 1)))
            else:  # "h": the chain head (locked) and the batch's events already stored
                ids_text = v(k, 15)[1:-1]
                head = (int(v(k, 5)), bytes.fromhex(v(k, 14)[2:].decode()),
                        {_uid(u) for u in ids_text.split(b",")} if ids_text else set())
        eng = Engine(accounts, transfers, failed, pending, now)
        results = [eng.apply(list(r.transfers)) for r in requests]
        writes = _writes(eng)
        # events: chosen per request by its outcome
        chosen: list[tuple[int, Event]] = []
        for k, (req, res) in enumerate(zip(requests, results, strict=True)):
            ok = _ok(res)
            chosen.extend((k, e) for e in (req.on_success if ok else req.on_failure))
        written: list[list[int]] = [[] for _ in requests]
        if chosen:
            assert head is not None  # read with the batch: it has events
            writes += self._append(head, chosen, written, now, checked)
        yield from self._write(writes)
        # committed: what the fast path may start from next time (all read under lock)
        if head is not None:
            self._head = self._new_head or head[:2]
        self._new_head = None
        self._keep(accounts)
        outcomes = [Outcome(tuple(res), tuple(w)) for res, w in zip(results, written,
                                                                     strict=True)]
        return outcomes, eng._next_ts - now

    def _keep(self, accounts: dict[int, AccountBalance]) -> None:
        if len(self._accounts) + len(accounts) > ACCOUNTS_KEPT_MAX:
            self._accounts.clear()
        self._accounts.update(accounts)

    def _forget(self) -> None:
        """After a batch that did not commit: nothing known is trusted any more."""
        self._head = self._new_head = None
        self._accounts.clear()

    def _submit_fast(self, requests: Sequence[Request], now: int,
                     checked: dict[int, str] | None,
                     ) -> Generator[bytes, PGresult, tuple[list[Outcome], int] | None]:
        """The batch in one round trip, when what this connection's last commit left
        (``_head``, ``_accounts``) is enough to compute it: ``begin; <lock the batch's
        accounts in id order>; <the writes, guarded>; commit``. None: it cannot (nothing
        sent), or its guard failed (``_missed``): its transaction is aborted (nothing
        written) and the caller runs it the usual way, starting with a rollback.

        Only batches of new, plain or pending transfers that all succeed (posts and
        voids, a transfer the engine refuses, an account never seen go the usual way),
        computed as if no transfer and no event of the batch were stored yet. The write
        then fails, writing nothing, unless that was so and the cache was right:
        - a transfer id stored already: the transfers' primary key; failed before: the
          guard looks in failed_transfers;
        - an event id or seq stored already: events' unique id, primary key seq;
        - the chain head moved: its update names the seq and MAC it expects;
        - balances: an account with a limit flag must hold exactly the cached balances
          (the engine's limit check used them); every other one is changed by the
          batch's deltas, whatever it holds, and the guard checks the sums the engine's
          overflow checks bound (they only grow in such a batch, so checking them after
          the batch is checking each transfer).
        Under one writer the cache is always right: one round trip a batch instead of
        two. Under several (worker processes on one ledger) a failed guard costs a
        round trip: after one, the next 2**misses batches (at most FAST_SKIP_MAX) go the
        usual way before the fast path is tried again."""
        if self._skip:
            self._skip -= 1
            return None
        cache = self._accounts
        accounts: dict[int, AccountBalance] = {}
        any_t = any_e = False
        for r in requests:
            for t in r.transfers:
                if int(t.flags) & _POST_VOID:
                    return None
                for i in (t.debit_account_id, t.credit_account_id):
                    if i not in accounts:
                        a = cache.get(i)
                        if a is None:
                            return None
                        accounts[i] = AccountBalance(
                            a.id, a.ledger, a.code, a.flags, a.debits_pending,
                            a.debits_posted, a.credits_pending, a.credits_posted)
                any_t = True
            if r.on_success:
                any_e = True
        head = self._head
        if not (any_t or any_e) or (any_e and head is None):
            return None
        eng = Engine(accounts, {}, set(), {}, now)
        results = []
        for r in requests:
            res = eng.apply(list(r.transfers))
            for x in res:
                if x is not R.CREATED:
                    return None
            results.append(res)
        writes = _new_rows(eng)
        touched = sorted(eng.touched_accounts)
        used = eng._next_ts - now
        n_accounts = len(touched)
        if n_accounts:
            writes.append(_deltas(eng.accounts, touched, cache))
        written: list[list[int]] = [[] for _ in requests]
        if any_e:
            assert head is not None
            chosen = [(k, e) for k, r in enumerate(requests) for e in r.on_success]
            writes += self._append((*head, set()), chosen, written, now, checked,
                                   guarded=True)
        notify = bool(writes) and writes[-1][0].startswith("select")
        parts = tuple(sql for sql, _ in (writes[:-1] if notify else writes))
        args = [_lit(p) for _, ps in writes for p in ps]
        if n_accounts:
            args.append(str(n_accounts))
        if any_t:  # the new transfers' ids: the first array of their insert, the first write
            assert writes[0][0] is _INSERT_TRANSFERS
            args.append(args[0])
        text, new = "", []
        if n_accounts:
            name, prep = self._stmt(_LOCK_A, "(uuid[])")
            text += prep
            new.append((_LOCK_A, name))
            lock = f"execute {name}({_lit(_ua(touched))}); "
        else:
            lock = ""
        sql = _fast_sql(parts, notify, n_accounts > 0, any_t)
        name, prep = self._stmt(sql)
        text += prep
        new.append((sql, name))
        text += f"{_BEGIN}{lock}execute {name}({', '.join(args)}); commit"
        pg = self.conn.pgconn
        done = yield text.encode()
        if done.status != _COMMAND_OK:
            state = done.error_field(_SQLSTATE)
            if (state not in _MISSES or pg.status != _CONN_OK
                    or pg.transaction_status != _INERROR):
                raise LedgerError(f"ledger batch not committed: {_error(done)}")
            for m in new:  # they ran before the begin
                self._mark(m)
            self._forget()
            self._misses += 1
            self._skip = min(FAST_SKIP_MAX, 2 ** self._misses)
            self.fast_misses += 1
            self._missed = True  # its transaction ends with the usual read's "rollback; "
            return None
        for m in new:
            self._mark(m)
        self._misses = 0
        self.fast_batches += 1
        if any_e:
            self._head = self._new_head
            self._new_head = None
        self._keep(accounts)
        outcomes = [Outcome(tuple(res), tuple(w)) for res, w in zip(results, written,
                                                                     strict=True)]
        return outcomes, used

    def _stmt(self, sql: str, types: str = "") -> tuple[str, str]:
        """The name ``sql`` is prepared under on this session, and the PREPARE to send
        first if it is not yet (empty if it is)."""
        name = self._prepared.get(sql)
        if name is not None:
            return name, ""
        name = f"payswitch_ledger_{self._named}"
        self._named += 1
        return name, f"prepare {name}{types} as {sql}; "

    def _write(self, writes: list[_Write]) -> Generator[bytes, PGresult, None]:
        """The batch's writes as one prepared statement (``_write_sql``) and COMMIT: one
        round trip, straight through libpq (``exec_`` waits without the GIL; psycopg's
        cursor added ~10 µs of Python per round trip)."""
        text, new = "commit", None
        if writes:
            text, new = self._call(_write_sql(writes), [_lit(p) for _, ps in writes for p in ps])
            text += "; commit"
        res = yield text.encode()
        if res.status != _COMMAND_OK:  # the rest of the string did not run: rolled back
            raise LedgerError(f"ledger batch not committed: {_error(res)}")
        self._mark(new)

    def _append(self, head: tuple[int, bytes, set[int]], chosen: list[tuple[int, Event]],
                written: list[list[int]], now: int,
                checked: dict[int, str] | None, guarded: bool = False) -> list[_Write]:
        """MACs the batch's new events onto the chain after ``head`` (seq, mac, the
        event ids already stored); returns their writes (events, outbox, head, notify)
        for the batch's one write statement. Seqs, each prev_mac (the one before's mac)
        and the outbox topics are derived in SQL from the columns."""
        if self.mac is None:
            raise LedgerError("this Ledger has no MAC function: cannot append events")
        head_seq, head_mac, seen = head
        fresh: list[Event] = []
        for k, e in chosen:
            if e.id in seen:
                continue
            seen.add(e.id)
            written[k].append(head_seq + 1 + len(fresh))
            fresh.append(e)
        if not fresh:
            return []
        c = ev.seal(fresh, head_seq + 1, head_mac, self.mac, now // 1000, checked)
        first, last = head_seq + 1, head_seq + len(fresh)
        types = _ta(c.types)
        self._new_head = (last, c.macs[-1])
        return [
            (_INSERT_EVENTS, (first, head_mac, _ub(c.id_bytes), types,
                              _ub(c.payment_id_bytes), _ub(c.transfer_id_bytes),
                              _ia(c.occurred_at_us), _ta(c.payloads), _ba(c.macs))),
            (_INSERT_OUTBOX, (first, types)),
            (_HEAD_GUARDED, (last, c.macs[-1], head_seq, head_mac)) if guarded else
            ("update event_chain_head set seq = %s, mac = %s where singleton",
             (last, c.macs[-1])),
            ("select pg_notify('payswitch_outbox', %s)", (str(last),)),
        ]


# Event k (1-based) of a batch: seq first + k - 1, prev_mac the mac of event k - 1 (the
# chain head's for the first).
_INSERT_EVENTS = (
    "insert into events (seq, id, type, payment_id, transfer_id, occurred_at, payload, "
    "prev_mac, mac) select %s + k - 1, i, t, p, tr, "
    "timestamptz 'epoch' + us * interval '1 microsecond', pl, "
    "coalesce(lag(m) over (order by k), %s::bytea), m from unnest(%s::uuid[], %s::text[], "
    "%s::uuid[], %s::uuid[], %s::bigint[], %s::text[], %s::bytea[]) with ordinality "
    "as u(i, t, p, tr, us, pl, m, k)")
_INSERT_OUTBOX = (
    "insert into outbox (event_seq, topic) select %s + k - 1, 'payswitch/events/' || t "
    "from unnest(%s::text[]) with ordinality as u(t, k)")
assert ev.TOPIC_PREFIX == "payswitch/events/"  # as written in _INSERT_OUTBOX


_READ_T = (
    "t as (select id, debit_account_id, credit_account_id, pending_id, amount, ts, ledger, "
    "code, flags, timeout_s from transfers where id = any($1::uuid[]))")
# Accounts, then pending states, each locked in id order (every writer and the expiry
# job lock in this order: no deadlock between them): the batch's own accounts and those
# of the pending transfers it posts or voids, found by the same statement.
# The ids to lock are an array made once (``= any(array(...))``, an InitPlan), not a
# semi-join (``in (select ...)``): under READ COMMITTED a row another writer changed
# while this one waited for its lock is re-checked (EvalPlanQual) against the WHERE,
# and a re-checked semi-join dropped it, so the batch read no such account and its
# holds were refused ``debit_account_not_found`` (two writers on one ledger: half of
# their holds; tests/test_ledger_two_writers.py, and with the fast path
# test_ledger_fast_write.py).
_READ_A = (
    "a as (select id, ledger, code, flags, debits_pending, debits_posted, credits_pending, "
    "credits_posted from accounts where id = any(array(select unnest($4::uuid[]) "
    "union all select unnest(array[debit_account_id, credit_account_id]) from t "
    "where id = any($3::uuid[]) and flags & 2 <> 0)) "  # 2: TransferFlags.PENDING
    "order by id for update)")
_READ_P = (
    "p as (select id, state, expires_at_ns from pending_transfers where id = any(array("
    "select id from t where id = any($3::uuid[]) and flags & 2 <> 0)) "
    "order by id for update)")
assert int(TransferFlags.PENDING) == 2  # as written in _READ_A and _READ_P
_READ_H = "h as (select seq, mac from event_chain_head where singleton for update)"
# One row layout for every part: tag, id, 3 uuids, 4 bigints, 4 ints, text, bytea, uuid[]
_ROW_T = ("select 't', id, debit_account_id, credit_account_id, pending_id, amount, ts, "
          "null::bigint, null::bigint, ledger, code, flags, timeout_s, null::text, "
          "null::bytea, null::uuid[] from t")
_ROW_F = ("select 'f', id, null, null, null, null, null, null, null, null, null, null, "
          "null, null, null, null from failed_transfers where id = any($2::uuid[])")
_ROW_A = ("select 'a', id, null, null, null, debits_pending, debits_posted, credits_pending, "
          "credits_posted, ledger, code, flags, null, null, null, null from a")
_ROW_P = ("select 'p', id, null, null, null, expires_at_ns, null, null, null, null, null, "
          "null, null, state, null, null from p")
_ROW_H = ("select 'h', null, null, null, null, seq, null, null, null, null, null, null, "
          "null, null, mac, array(select id from events where id = any($5::uuid[])) "
          "from h")


# The read's parameters: $1 transfer and pending ids, $2 transfer ids, $3 pending ids,
# $4 account ids, $5 event ids.
_READ_TYPES = "(uuid[], uuid[], uuid[], uuid[], uuid[])"
# Every batch's transaction starts under these, so the plans of its prepared statements
# (made once, on their first run) are key lookups whatever the tables held then: a plan
# made while a table was empty (a new database) is a seq scan, kept as the table grows
# (switch/README.md, "Where one worker waits"). Every read and write of a batch is by
# primary key or from arrays; SET LOCAL ends with the transaction.
_BEGIN = ("begin; set local enable_seqscan = off; "
          "set local plan_cache_mode = force_generic_plan; ")


@functools.lru_cache(maxsize=4)
def _read_sql(transfers: bool, events: bool) -> str:
    """A batch's reads as one statement of tagged rows: its transfers and failed ids, the
    accounts and pending states it may change (locked), the chain head (locked) and
    which of its events are stored already. The parts of a UNION ALL run in order, so
    the locks are taken in the order separate statements took them: accounts by id,
    pending states by id, the head."""
    ctes, rows = [], []
    if transfers:
        ctes += [_READ_T, _READ_A, _READ_P]
        rows += [_ROW_T, _ROW_F, _ROW_A, _ROW_P]
    if events:
        ctes.append(_READ_H)
        rows.append(_ROW_H)
    assert rows, "a batch with neither transfers nor events"
    return "with " + ", ".join(ctes) + " " + " union all ".join(rows)


# One statement and its parameters; a batch's writes go to the server as one statement.
_Write = tuple[str, tuple[Any, ...]]


@functools.lru_cache(maxsize=64)
def _shape_sql(parts: tuple[str, ...], numbered: bool = True) -> str:
    """The one statement of a batch's writes (``$n`` parameters), by the parts it has:
    each a data-modifying WITH part. They touch different tables, and no part reads what
    another writes (all see the statement's one snapshot), so the result is the same as
    one statement each. A plain ``select`` (pg_notify), if any, is last and must be the
    primary query: PostgreSQL skips a WITH select that nothing reads."""
    *mods, main = parts if parts[-1].startswith("select") else (*parts, "select 1")
    assert not any(p.startswith("select") for p in mods), "at most one select, the last"
    sql = (("with " + ", ".join(f"w{k} as ({p})" for k, p in enumerate(mods)) + " ")
           if mods else "") + main
    if not numbered:  # psycopg binds the parameters (the expiry job)
        return sql
    return sql % tuple(f"${k}" for k in range(1, sql.count("%s") + 1))


def _write_sql(writes: list[_Write]) -> str:
    """All of a batch's writes as one statement; its parameters are the writes' in order.
    Built once per shape (which parts a batch has), not per batch."""
    return _shape_sql(tuple(sql for sql, _ in writes))


# The fast write's chain head: moved only from where this connection left it.
_HEAD_GUARDED = ("update event_chain_head set seq = %s, mac = %s where singleton "
                 "and seq = %s and mac = %s returning 1")
# Its accounts, locked in id order before the write (as every writer locks them).
_LOCK_A = "select 1 from accounts where id = any($1::uuid[]) order by id for update"
_SQLSTATE = psycopg.pq.DiagnosticField.SQLSTATE
_CONN_OK = psycopg.pq.ConnStatus.OK
# A fast write that fails with one of these wrote nothing, and only found the cache
# wrong: division_by_zero (its guard), unique_violation (a transfer, event id or seq
# stored already), numeric_value_out_of_range (a balance would overflow),
# check_violation (an account's limit), deadlock_detected, serialization_failure.
_MISSES = frozenset((b"22012", b"23505", b"22003", b"23514", b"40P01", b"40001"))
FAST_SKIP_MAX = 64
ACCOUNTS_KEPT_MAX = 10_000


# The fast write's guards ({w}: the part's name): every balance update found its row
# and no sum passed what the engine's overflow checks allow; the head update its row.
_GUARD_A = ("(select count(*) from {w}) = %s and not exists (select 1 from {w} "
            "where debits_pending::numeric + debits_posted > 9223372036854775807 "
            "or credits_pending::numeric + credits_posted > 9223372036854775807)")
assert AMOUNT_MAX == 9223372036854775807  # as written in _GUARD_A
_GUARD_H = "exists (select 1 from {w})"


@functools.lru_cache(maxsize=64)
def _fast_sql(parts: tuple[str, ...], notify: bool, accounts: bool, transfers: bool) -> str:
    """The fast write (``Ledger._submit_fast``): the parts as ``_shape_sql`` joins them
    (the balances one being ``_DELTAS``, the head one ``_HEAD_GUARDED``), and a main
    query that divides by zero, failing the statement and so the batch, unless every
    balance update found its row (and no sum passed the bigint range), the head was
    where this connection left it, and no transfer of the batch failed before. Its
    parameters: the parts', pg_notify's, the count of accounts, the transfer ids."""
    names = {p: f"w{k}" for k, p in enumerate(parts)}
    conds = []
    if accounts:
        w = names[_DELTAS]
        conds.append(_GUARD_A.replace("{w}", w))
    if _HEAD_GUARDED in names:
        conds.append(_GUARD_H.replace("{w}", names[_HEAD_GUARDED]))
    if transfers:
        conds.append("not exists (select 1 from failed_transfers "
                     "where id = any(%s::uuid[]))")
    assert conds, "a fast write guards something"
    main = ("select " + ("pg_notify('payswitch_outbox', %s), " if notify else "")
            + "1 / (case when " + " and ".join(conds) + " then 1 else 0 end)")
    sql = "with " + ", ".join(f"{w} as ({p})" for p, w in names.items()) + " " + main
    return sql % tuple(f"${k}" for k in range(1, sql.count("%s") + 1))


def _execute_writes(cur: Cursor, writes: list[_Write]) -> None:
    """The expiry job's writes: one statement, parameters bound by psycopg."""
    if writes:
        cur.execute(_shape_sql(tuple(sql for sql, _ in writes), numbered=False),
                    tuple(p for _, ps in writes for p in ps))


def _lit(v: str | int | bytes | None) -> str:
    """A value as an SQL literal, for a query sent without parameters. Strings are
    quoted with their quotes doubled: the connection has standard_conforming_strings on
    (backslashes are plain characters). ~0.3 µs, where psycopg's client-side quoting of
    a parameter was ~5 µs."""
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, bytes):
        return "'\\x" + v.hex() + "'::bytea"
    if v is None:
        return "null"
    return str(int(v))


def _writes(eng: Engine) -> list[_Write]:
    """The engine's outputs as writes: new transfers, pending states, balances, failures."""
    out = _new_rows(eng)
    if eng.touched_accounts:
        acc = [eng.accounts[i] for i in sorted(eng.touched_accounts)]
        out.append((
            "update accounts a set debits_pending = u.dp, debits_posted = u.dpo, "
            "credits_pending = u.cp, credits_posted = u.cpo from unnest(%s::uuid[], "
            "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) "
            "as u(id, dp, dpo, cp, cpo) where a.id = u.id",
            (_ua([a.id for a in acc]), _ia([a.debits_pending for a in acc]),
             _ia([a.debits_posted for a in acc]), _ia([a.credits_pending for a in acc]),
             _ia([a.credits_posted for a in acc]))))
    if eng.new_failed:
        nf = eng.new_failed
        out.append((
            "insert into failed_transfers (id, result, ts) select * from unnest("
            "%s::uuid[], %s::text[], %s::bigint[]) on conflict (id) do nothing",
            (_ua([f[0] for f in nf]), _ta([f[1] for f in nf]), _ia([f[2] for f in nf]))))
    return out


_LIMITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
                             | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
# The fast write's balances: each touched account changed by the batch's deltas; one
# with a limit flag only if it holds the balances the engine checked (o*, else NULL).
# RETURNING the new balances: the guard checks the sums the overflow checks bound.
_DELTAS = (
    "update accounts a set debits_pending = a.debits_pending + u.dp, "
    "debits_posted = a.debits_posted + u.dpo, credits_pending = a.credits_pending + u.cp, "
    "credits_posted = a.credits_posted + u.cpo from unnest(%s::uuid[], %s::bigint[], "
    "%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::bigint[]) as u(id, dp, dpo, cp, cpo, odp, odpo, ocp, ocpo) where a.id = u.id "
    "and (u.odp is null or (a.debits_pending, a.debits_posted, a.credits_pending, "
    "a.credits_posted) = (u.odp, u.odpo, u.ocp, u.ocpo)) "
    "returning a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted")


def _deltas(accounts: dict[int, AccountBalance], ids: list[int],
            before: dict[int, AccountBalance]) -> _Write:
    """The fast write's balance update: per touched account (``ids``, in id order) the
    batch's change to the cached balances, and those balances where the account has a
    limit."""
    cols: list[list[int | None]] = [[] for _ in range(8)]
    for i in ids:
        a, o = accounts[i], before[i]
        cols[0].append(a.debits_pending - o.debits_pending)
        cols[1].append(a.debits_posted - o.debits_posted)
        cols[2].append(a.credits_pending - o.credits_pending)
        cols[3].append(a.credits_posted - o.credits_posted)
        exact = a.flags & _LIMITS
        cols[4].append(o.debits_pending if exact else None)
        cols[5].append(o.debits_posted if exact else None)
        cols[6].append(o.credits_pending if exact else None)
        cols[7].append(o.credits_posted if exact else None)
    return _DELTAS, (_ua(ids), *map(_ia, cols))


_INSERT_TRANSFERS = (
    "insert into transfers (id, debit_account_id, credit_account_id, amount, "
    "pending_id, ledger, code, flags, timeout_s, ts) select * from unnest("
    "%s::uuid[], %s::uuid[], %s::uuid[], %s::bigint[], %s::uuid[], %s::int[], "
    "%s::int[], %s::int[], %s::int[], %s::bigint[])")
_UPSERT_PENDING = (
    "insert into pending_transfers (id, state, expires_at_ns) select * from "
    "unnest(%s::uuid[], %s::text[], %s::bigint[]) on conflict (id) do update "
    "set state = excluded.state")


def _new_rows(eng: Engine) -> list[_Write]:
    """The engine's new transfers and pending states as writes."""
    out: list[_Write] = []
    nt = eng.new_transfers
    if nt:
        out.append((
            _INSERT_TRANSFERS,
            (_ua([t.id for t in nt]), _ua([t.debit_account_id for t in nt]),
             _ua([t.credit_account_id for t in nt]), _ia([t.amount for t in nt]),
             _ua([t.pending_id for t in nt]), _ia([t.ledger for t in nt]),
             _ia([t.code for t in nt]), _ia([t.flags for t in nt]),
             _ia([t.timeout_s for t in nt]), _ia([t.ts for t in nt]))))
    pc = eng.pending_changes
    if pc:
        keys = list(pc)
        out.append((
            _UPSERT_PENDING,
            (_ua(keys), _ta([pc[k].state for k in keys]),
             _ia([pc[k].expires_at_ns for k in keys]))))
    return out


class _Tx:
    """BEGIN ... COMMIT on an autocommit connection; ROLLBACK on any exception."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.cur: Cursor | None = None

    def __enter__(self) -> Cursor:
        self._tx = self.conn.transaction()
        self._tx.__enter__()
        self.cur = self.conn.cursor()
        return self.cur

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        assert self.cur is not None  # __enter__ made it
        self.cur.close()
        return self._tx.__exit__(et, e, tb)


def new_account(id: int, ledger: int, code: int, *, debits_must_not_exceed_credits: bool = False,
                credits_must_not_exceed_debits: bool = False) -> Account:
    flags = AccountFlags.NONE
    if debits_must_not_exceed_credits:
        flags |= AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    if credits_must_not_exceed_debits:
        flags |= AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    return Account(id, ledger, code, flags)
