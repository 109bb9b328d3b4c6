#!/usr/bin/env bash
# Runs the whole test suite: installs what the integration tests need (Kannel with its fake
# SMSC, an SMTP server; from Debian packages), makes sure PostgreSQL is up, then checks
# formatting and lints and runs every test against real SQLite, PostgreSQL, Kannel and SMTP:
# the whole suite once on SQLite and once on PostgreSQL.
# Under CI=true a missing service fails the run; it is never skipped.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/install-deps.sh"

# PostgreSQL: the machine's local server (trust auth, database `test`).
export CAMPAIGND_TEST_PG_URL="${CAMPAIGND_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
        for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
    fi
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if is_ci; then die "PostgreSQL is not reachable on 127.0.0.1:5432"; fi
    log "warning: PostgreSQL is not reachable; its tests will fail"
fi

# Each test makes a schema of its own (t_<uuid>) and leaves it for inspection; clear those of
# earlier runs so the test database does not grow without bound. One statement per schema
# (\gexec): dropping them all in one transaction runs out of lock slots.
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v psql >/dev/null; then
    psql "$CAMPAIGND_TEST_PG_URL" -qAt >/dev/null <<'SQL' || log "warning: could not drop the test schemas of earlier runs"
SET client_min_messages = warning;
SELECT format('DROP SCHEMA %I CASCADE', nspname) FROM pg_namespace WHERE nspname LIKE 't\_%' \gexec
SQL
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings
log "cargo test (SQLite, plus the _on_postgres variants)"
cargo test --workspace -- --test-threads=2
# The whole workspace again on PostgreSQL: every test that does not name its backend takes it
# from CAMPAIGND_TEST_BACKEND (store::testing). Tests named _on_sqlite / _on_postgres already
# ran above on the backend they name, so they are skipped. The same `--workspace` selection
# as above, so cargo reuses that build.
log "cargo test on PostgreSQL (the whole workspace, less the _on_sqlite/_on_postgres variants)"
CAMPAIGND_TEST_BACKEND=postgres cargo test --workspace -- --test-threads=2 \
    --skip _on_sqlite --skip _on_postgres
