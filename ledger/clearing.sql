-- Clearing: which authorizations were presented, in which cycle, under which ARN.
-- One row per payment, ever (primary key): nothing is presented twice, whatever
-- restarts or re-runs happen. A cycle (network, date) is closed once; its presentments
-- are chosen in the same transaction, so a re-run of that date finds the same rows and
-- writes the same bytes.
create table if not exists clearing_cycles (
    network text not null,
    cycle_date date not null,
    cutoff_ns bigint not null,
    closed_at timestamptz not null default now(),
    primary key (network, cycle_date)
);

create table if not exists presentments (
    payment_id uuid primary key,
    hold_id uuid not null unique,
    network text not null,
    cycle_date date not null,
    seq bigint not null check (seq > 0),         -- order in the file; ARN sequence
    kind text not null check (kind in ('sale', 'credit', 'cash')),
    amount_minor bigint not null check (amount_minor > 0),
    auth_amount_minor bigint,                   -- set when the final amount differs
    ledger int not null,                        -- ISO 4217 numeric
    auth_code text not null,
    txn_date date not null,
    arn text not null unique,
    terminal_id text not null default '',
    created_at timestamptz not null default now(),
    unique (network, seq),
    foreign key (network, cycle_date) references clearing_cycles (network, cycle_date)
);
create index if not exists presentments_cycle on presentments (network, cycle_date, seq);
