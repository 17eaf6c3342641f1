-- The crawl keeps every raw document in resource_documents.document (jsonb). Documents over
-- about 2 kB are compressed on their way to disk, with pglz by default: storing 2,000 of the
-- stub's documents (4.5 kB on average) took 380 ms with pglz, 215 ms with lz4 and 275 ms with no
-- compression at all (more to write), and lz4's table came out 8% larger than pglz's. lz4 it is.
-- It applies to values written from now on. A server built without lz4 (or older than
-- PostgreSQL 14) keeps pglz: slower, not wrong.
do $$
begin
    execute 'alter table resource_documents alter column document set compression lz4';
exception when others then
    raise notice 'resource_documents.document keeps its default compression: %', sqlerrm;
end
$$;
