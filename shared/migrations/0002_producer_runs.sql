-- One row per producer run, updated as pages are published, so `pokeq status` can show the
-- progress of the last run (a run killed mid-way stays `running`; its updated_at shows when it
-- was last heard of).

create table producer_runs (
    id            bigserial   primary key,
    started_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    finished_at   timestamptz null,
    state         text        not null check (state in ('running', 'done', 'failed')),
    total         bigint      null,
    pages_planned bigint      null,
    pages_done    bigint      not null default 0,
    listed        bigint      not null default 0,
    published     bigint      not null default 0,
    skipped       bigint      not null default 0,
    error         text        null
);

-- When the broker confirmed an item's job: with pokemon.ingested_at, the time from publish to
-- commit that benchmarks and operators look at.
alter table ingest_items add column queued_at timestamptz null;
