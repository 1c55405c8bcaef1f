-- payswitch switch runtime schema. Idempotent: run at every start.
-- No clear PAN, track 2, PIN block, CVV or EMV data is ever stored here: rows hold the
-- masked PAN and the safe fields (see journal.SAFE_FIELDS) only.

-- Append-only: one row per request/response crossing the switch, in either direction.
create table if not exists switch_journal (
    id bigserial primary key,
    at timestamptz not null default now(),
    event text not null,      -- request | response | issuer_request | issuer_response | duplicate | duplicate_mismatch | saf_queued | saf_acked | saf_expired | recovered | response_corrected | ledger_void_pending | risk_scored
    source text,              -- terminal id (DE41) or acquirer id the request came from
    link text,                -- issuer link name
    dup_key text,             -- duplicate-detection key of the originating request
    mti text,
    stan text,
    rrn text,
    transmission_time text,
    amount_minor bigint,
    currency text,
    processing_code text,
    pan_masked text,
    terminal_id text,
    response_code text,
    fields jsonb not null default '{}'::jsonb
);
create index if not exists switch_journal_dup_key on switch_journal (dup_key);
create index if not exists switch_journal_ledger_void
    on switch_journal (at) where event = 'ledger_void_pending';
create index if not exists switch_journal_original
    on switch_journal (source, stan, transmission_time) where event = 'request';

-- Duplicate detection: one row per distinct request; the first to insert owns it.
-- response is null while the original is in flight.
create table if not exists switch_dedup (
    dup_key text primary key,
    created_at timestamptz not null default now(),
    completed_at timestamptz,
    response jsonb
);
-- What the key does not cover: sha256 over the PAN's HSM token (else an HMAC of the
-- PAN under a switch key; never a plain PAN hash), processing code and currency. A
-- request with the same key and another fingerprint is answered 94, never replayed.
alter table switch_dedup add column if not exists fingerprint text;

-- Durable store-and-forward queue (reversal advices, advices to issuers).
create table if not exists switch_saf (
    id bigserial primary key,
    created_at timestamptz not null default now(),
    link text not null,
    mti text not null,
    dup_key text,
    message jsonb not null,
    state text not null default 'pending',   -- pending | acked | expired
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    expires_at timestamptz not null,
    last_result text
);
create index if not exists switch_saf_due on switch_saf (next_attempt_at) where state = 'pending';

-- PAN at rest for store-and-forward (so that a resent 0420 / advice carries DE2 again):
-- a token (HMAC-SHA256 under the TKN key, for lookups) and the PAN encrypted under the
-- DEK with AES-GCM inside the HSM, the payment's dup_key as associated data (a blob
-- copied to another payment's row does not decrypt). Null without an HSM.
-- The same pair on the journal's issuer_request rows: start-up recovery builds its
-- 0420s from them, with DE2.
alter table switch_saf add column if not exists pan_token text;
alter table switch_saf add column if not exists pan_enc bytea;
alter table switch_journal add column if not exists pan_token text;
alter table switch_journal add column if not exists pan_enc bytea;

-- One reversal per original: the first reversal (0400 sent online, or a 0420 queued)
-- claims the original's dup_key, in the same transaction as its issuer_request row
-- or its SAF row; a later reversal of the same original (another STAN, 0400 or 0420)
-- is answered 00 and sends nothing.
create table if not exists switch_reversal (
    original_dup_key text primary key,
    reversal_dup_key text not null,
    created_at timestamptz not null default now()
);

-- Holds the switch owes a void (read by `ledger verify`, check 6, and by the start-up
-- voids): the original of every decided reversal (switch_reversal), every request
-- answered 96 with its ledger outcome unknown (ledger_void_pending) and every request
-- recovered after a crash (its sender never heard an approval). Both legs of each:
-- the ids are ledgerwire.det_id('hold' | 'hold2', dup_key), the first 16 bytes of
-- sha256('payswitch|<leg>|<dup_key>') as a uuid. A named id that never became a
-- transfer (a declined or unheld request) is simply not found by the join.
create or replace view ledger_expected_voids as
with owed as (
    select original_dup_key as dup_key, 'reversal' as reason from switch_reversal
    union all
    select dup_key, case event when 'recovered' then 'recovered' else 'answered_96' end
      from switch_journal
     where event in ('recovered', 'ledger_void_pending') and dup_key is not null
)
select encode(substring(sha256(convert_to('payswitch|' || leg || '|' || dup_key, 'UTF8'))
                        from 1 for 16), 'hex')::uuid as transfer_id,
       reason, dup_key
  from owed cross join (values ('hold'), ('hold2')) as legs(leg);

-- Worker processes (`payswitch serve --workers N`): every row names the process that
-- wrote it (its boot id, new at each start). A process holds a session advisory lock
-- on its boot id while it lives (journal.OWNER_LOCK_CLASS, hashtext(owner)); start-up
-- recovery answers 91 only for open requests whose owner's lock is free (the process
-- is gone: PostgreSQL drops a session's locks when its connection closes). Rows from
-- before this column (null) belong to no live process.
alter table switch_dedup add column if not exists owner text;
alter table switch_journal add column if not exists owner text;
alter table switch_saf add column if not exists owner text;
create index if not exists switch_dedup_open on switch_dedup (owner)
    where completed_at is null;
