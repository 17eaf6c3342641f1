-- pokeq's first schema: the stored rows and the state of every item.

create table pokemon (
    id              integer primary key,
    name            text        not null,
    height_m        numeric     not null,
    weight_kg       numeric     not null,
    base_experience integer     null,
    types           text[]      not null,
    abilities       text[]      not null default '{}',
    stats           jsonb       not null default '[]',
    sprite_url      text        null,
    species         text        null,
    is_default      boolean     null,
    sort_order      integer     null,
    ingested_at     timestamptz not null default now()
);

-- One row per resource the producer listed or a consumer received. Postgres owns item state:
-- it deduplicates API calls across runs and lets any tool see where each item is.
create table ingest_items (
    resource   text        not null,
    id         integer     not null,
    name       text        null,
    status     text        not null check (status in ('pending', 'queued', 'done', 'failed')),
    attempts   integer     not null default 0,
    last_error text        null,
    error_kind text        null,
    updated_at timestamptz not null default now(),
    primary key (resource, id)
);

-- No index on status: every query by item goes through the primary key, and a (resource,
-- status) index tempted Postgres's generic plans, made while the table was nearly empty, into
-- scanning it for look-ups by id (found by the benchmark). Counts by status scan the table.
