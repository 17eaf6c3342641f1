-- The request rate every producer and consumer shares, whatever host it runs on: each process
-- reserves a short window of request slots by moving next_at forward (see shared/src/rate.rs).

create table api_rate (
    name    text        primary key,
    next_at timestamptz not null
);
