-- payswitch ledger schema (version 1). Idempotent: run by payswitch.ledger.schema.migrate().
-- Names are unqualified: the tables go into the first schema of the connection's search_path,
-- so tests can give every case a schema of its own.
--
-- Money: bigint minor units; a ledger is one currency (ledger = ISO 4217 numeric code).
-- Ids: uuid (128-bit, caller-generated, time-ordered).
-- Time: transfers carry a bigint UTC nanosecond timestamp assigned by the writer.

create table if not exists ledger_schema_version (
    version int primary key,
    applied_at timestamptz not null default now()
);

create table if not exists accounts (
    id uuid primary key,
    ledger int not null check (ledger > 0),
    code int not null check (code > 0),
    flags int not null default 0,          -- 1 debits_must_not_exceed_credits, 2 credits_must_not_exceed_debits
    debits_pending bigint not null default 0 check (debits_pending >= 0),
    debits_posted bigint not null default 0 check (debits_posted >= 0),
    credits_pending bigint not null default 0 check (credits_pending >= 0),
    credits_posted bigint not null default 0 check (credits_posted >= 0),
    created_at timestamptz not null default now(),
    -- the limit flags, enforced a second time by the database itself
    constraint accounts_flags_exclusive check ((flags & 3) <> 3),
    constraint accounts_debit_limit check (
        (flags & 1) = 0 or debits_pending + debits_posted <= credits_posted),
    constraint accounts_credit_limit check (
        (flags & 2) = 0 or credits_pending + credits_posted <= debits_posted)
);

-- Immutable: inserted once, never updated or deleted (trigger below).
-- No foreign keys on this hot table: they cost ~25 µs per row (two RI trigger look-ups),
-- about a third of a batch. The writer inserts a transfer only after locking both accounts
-- (and the pending transfer) in the same transaction, and `ledger verify` reports orphans.
create table if not exists transfers (
    id uuid primary key,
    debit_account_id uuid not null,
    credit_account_id uuid not null,
    amount bigint not null check (amount > 0),
    pending_id uuid,
    ledger int not null,
    code int not null,
    flags int not null,                    -- 1 linked, 2 pending, 4 post_pending, 8 void_pending
    timeout_s int not null default 0,
    ts bigint not null,                    -- UTC ns, increasing per writer
    check (debit_account_id <> credit_account_id)
);
create index if not exists transfers_debit_idx on transfers (debit_account_id);
create index if not exists transfers_credit_idx on transfers (credit_account_id);

-- The one mutable fact about a pending transfer: is it still pending?
create table if not exists pending_transfers (
    id uuid primary key,                   -- a transfers.id (no FK: see transfers)
    state text not null check (state in ('pending', 'posted', 'voided', 'expired')),
    expires_at_ns bigint                   -- null: never expires
);
create index if not exists pending_transfers_expiry_idx
    on pending_transfers (expires_at_ns) where state = 'pending';

-- Ids whose transfer failed on state (not on its own shape): a retry gets id_already_failed.
create table if not exists failed_transfers (
    id uuid primary key,
    result text not null,
    ts bigint not null
);

-- Event store: append-only, MAC-chained (one global chain, see README).
create table if not exists events (
    seq bigint primary key check (seq > 0),
    id uuid not null unique,
    type text not null check (length(type) between 1 and 64),
    payment_id uuid,
    transfer_id uuid,
    occurred_at timestamptz not null,
    payload text not null,                 -- canonical JSON, exactly the bytes that were MACed
    prev_mac bytea not null,
    mac bytea not null
);
create index if not exists events_payment_idx on events (payment_id, seq);
create index if not exists events_transfer_idx on events (transfer_id) where transfer_id is not null;

-- One row: the chain's head, locked by every appending transaction (FOR UPDATE).
create table if not exists event_chain_head (
    singleton boolean primary key default true check (singleton),
    seq bigint not null,
    mac bytea not null
);
insert into event_chain_head (singleton, seq, mac)
    values (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
    on conflict do nothing;

-- Outbox: written with the events, drained by the MQTT relay.
create table if not exists outbox (
    event_seq bigint primary key,          -- an events.seq (no FK: written in the same statement batch)
    topic text not null,
    sent_at timestamptz
);
create index if not exists outbox_unsent_idx on outbox (event_seq) where sent_at is null;

create or replace function ledger_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'ledger: % on % is not allowed (append-only)', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
end;
$$;

do $$
begin
    if not exists (select 1 from pg_trigger where tgname = 'events_append_only'
                   and tgrelid = 'events'::regclass) then
        create trigger events_append_only before update or delete on events
            for each row execute function ledger_refuse_change();
        create trigger events_no_truncate before truncate on events
            for each statement execute function ledger_refuse_change();
    end if;
    if not exists (select 1 from pg_trigger where tgname = 'transfers_immutable'
                   and tgrelid = 'transfers'::regclass) then
        create trigger transfers_immutable before update or delete on transfers
            for each row execute function ledger_refuse_change();
    end if;
end;
$$;

-- Privileges: nobody but the owner may change history. The application role (if any) is
-- granted INSERT/SELECT only by migrate(app_role=...).
revoke update, delete, truncate on events, transfers from public;

insert into ledger_schema_version (version) values (1) on conflict do nothing;
