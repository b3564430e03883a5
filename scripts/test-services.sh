#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis that the tests use are up (DESIGN §9):
# TEST_DATABASE_URL / TEST_REDIS_URL when set, else the local servers on 127.0.0.1:5432 and
# 127.0.0.1:6379, started here when they are installed but not running. Fails, saying what to
# install, when they cannot be had.
set -euo pipefail

pg_url=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
redis_url=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

pg_up() { pg_isready -q -d "$pg_url" 2>/dev/null || psql "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; }
redis_up() { redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG; }

wait_for() { # name check
  for _ in $(seq 1 50); do "$2" && return 0; sleep 0.2; done
  return 1
}

if ! pg_up; then
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    echo "test-services: PostgreSQL at TEST_DATABASE_URL does not answer" >&2; exit 1
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql | sort -V | tail -n1)
    echo "test-services: starting local PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_for postgres pg_up || { echo "test-services: PostgreSQL did not come up" >&2; exit 1; }
  else
    echo "test-services: no PostgreSQL on 127.0.0.1:5432 and none installed." >&2
    echo "  install it (Debian: apt-get install postgresql) or set TEST_DATABASE_URL" >&2
    exit 1
  fi
fi
# The tests log in as postgres without a password (trust on 127.0.0.1), as on the CI machine.
if ! psql "$pg_url" -Atqc 'select 1' >/dev/null 2>&1; then
  echo "test-services: PostgreSQL answers but $pg_url cannot log in; allow trust for 127.0.0.1 or set TEST_DATABASE_URL" >&2
  exit 1
fi

if ! redis_up; then
  if [ -n "${TEST_REDIS_URL:-}" ]; then
    echo "test-services: Redis at TEST_REDIS_URL does not answer" >&2; exit 1
  fi
  if command -v redis-server >/dev/null 2>&1; then
    echo "test-services: starting local Redis"
    mkdir -p /tmp/authd-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/authd-redis --logfile /tmp/authd-redis/redis.log
    wait_for redis redis_up || { echo "test-services: Redis did not come up" >&2; exit 1; }
  else
    echo "test-services: no Redis on 127.0.0.1:6379 and none installed." >&2
    echo "  install it (Debian: apt-get install redis-server) or set TEST_REDIS_URL" >&2
    exit 1
  fi
fi
echo "test-services: PostgreSQL and Redis are up"
