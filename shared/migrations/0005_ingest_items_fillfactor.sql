-- Every item's row is updated two or three times after it is listed (queued, then done or
-- failed). With the default fillfactor of 100 the page a row sits on is full, so each update
-- moves the row to another page and adds a primary-key entry. Half-full pages leave room for
-- the new version on the same page (a HOT update: no index write), which the benchmark showed
-- in Postgres's CPU per item. It applies to pages written from now on.
alter table ingest_items set (fillfactor = 50);
