#!/bin/bash
# First start: initdb with POSTGRES_USER (superuser, password POSTGRES_PASSWORD, scram-sha-256
# over TCP from anywhere) and create POSTGRES_DB; every start: exec postgres in the foreground.
set -euo pipefail
user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-${user}}"
if [ ! -s "${PGDATA}/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres-entrypoint: set POSTGRES_PASSWORD (the superuser's password)" >&2
    exit 1
  fi
  pwfile="$(mktemp)"
  printf '%s\n' "${POSTGRES_PASSWORD}" >"${pwfile}"
  initdb -D "${PGDATA}" -U "${user}" --pwfile="${pwfile}" --auth-host=scram-sha-256 \
    --auth-local=trust --encoding=UTF8 --no-locale >/dev/null
  rm -f "${pwfile}"
  printf "listen_addresses = '*'\n" >>"${PGDATA}/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"${PGDATA}/pg_hba.conf"
  if [ "${database}" != "postgres" ]; then
    echo "CREATE DATABASE \"${database}\";" | postgres --single -D "${PGDATA}" postgres >/dev/null
  fi
  echo "postgres-entrypoint: created the cluster in ${PGDATA} (user ${user}, database ${database})"
fi
exec postgres -D "${PGDATA}"
