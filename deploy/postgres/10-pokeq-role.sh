#!/usr/bin/env bash
# First boot of the compose Postgres (docker-entrypoint-initdb.d): the application role pokeq's
# binaries log in as. It is not a superuser and cannot create roles or databases; it owns the
# `pokeq` database, hence its `public` schema and every table the migrations create there, and
# nothing else. POSTGRES_USER stays the administrator, for people only.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=app_user="$POKEQ_DB_USER" --set=app_password="$POKEQ_DB_PASSWORD" <<'SQL'
create role :"app_user" login password :'app_password'
  nosuperuser nocreatedb nocreaterole noinherit;
alter database pokeq owner to :"app_user";
revoke all on database pokeq from public;
grant connect, temporary on database pokeq to :"app_user";
\connect pokeq
alter schema public owner to :"app_user";
SQL
