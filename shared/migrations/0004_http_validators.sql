-- HTTP cache validators of the stored document, so `producer --refresh` costs the API a 304
-- per unchanged item instead of a full download.

alter table ingest_items add column etag text null;
alter table ingest_items add column last_modified text null;
