-- Consumers whose API circuit is open (the API fails for everything and their jobs wait), so
-- `pokeq status` can say so. A row lives while its circuit is open and is refreshed every few
-- seconds; a row not refreshed for a while belongs to a process that is gone.
create table api_circuit (
    process    text primary key,
    since      timestamptz not null,
    error      text not null,
    updated_at timestamptz not null default now()
);
