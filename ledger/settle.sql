-- After clearing: the networks' chargebacks, reconciliation explanations, payouts.
-- Needs clearing.sql (presentments).

-- One first chargeback per ARN. payment_id is null when no presentment has that ARN
-- (state 'unmatched': nothing moved, reconciliation reports it).
create table if not exists chargebacks (
    arn text primary key,
    network text not null,
    payment_id uuid,
    amount_minor bigint not null check (amount_minor > 0),
    ledger int not null,
    reason_code text not null,
    state text not null check (state in ('open', 'unmatched', 'represented')),
    created_at timestamptz not null default now()
);

-- A reconciliation mismatch someone explained (its key: class|network|ARN or class|
-- network|currency); it is then reported as explained and no longer fails the run.
create table if not exists recon_explanations (
    key text primary key,
    note text not null,
    created_at timestamptz not null default now()
);

-- One payout per merchant, currency and settlement date; returned payouts restore the
-- merchant payable.
create table if not exists payouts (
    merchant_id text not null,
    ledger int not null,
    settle_date date not null,
    amount_minor bigint not null check (amount_minor > 0),
    rail text not null check (rail in ('ach', 'iso20022')),
    reference text not null unique,
    state text not null check (state in ('sent', 'returned')),
    return_code text,
    created_at timestamptz not null default now(),
    primary key (merchant_id, ledger, settle_date)
);
