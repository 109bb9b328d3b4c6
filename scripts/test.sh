#!/usr/bin/env bash
# Runs the whole test suite: installs what the integration tests need (Kannel with its fake
# SMSC, an SMTP server; from Debian packages), makes sure PostgreSQL is up, then checks
# formatting and lints and runs every test against real SQLite, PostgreSQL, Kannel and SMTP:
# the whole suite once on SQLite and once on PostgreSQL.
# Under CI=true a missing service fails the run; it is never skipped.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
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

# PostgreSQL test schemas. Each test makes a schema of its own, t_<run>_<uuid>, and leaves it
# for inspection. <run> is this run's id, CAMPAIGND_TEST_RUN = <unix seconds>_<tag> (set here,
# or given to repeat a layout; store::testing refuses any other shape). So this script only
# ever drops:
#   - its own run's schemas, when the run passes (a failed run keeps them for inspection);
#   - schemas whose embedded start time is older than CAMPAIGND_TEST_SCHEMA_DAYS (default 2)
#     days, so schemas of failed or killed runs do not pile up.
# Never the schemas of a run beside this one (a developer's run next to CI's). Schemas named
# t_<uuid> by older checkouts (before run ids) carry no time and are left alone; drop them by
# hand once nothing old runs any more. One statement per schema (\gexec): dropping many in one
# transaction runs out of lock slots.
if [[ -z "${CAMPAIGND_TEST_RUN:-}" ]]; then
    CAMPAIGND_TEST_RUN="$(date +%s)_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
fi
export CAMPAIGND_TEST_RUN
[[ "$CAMPAIGND_TEST_RUN" =~ ^[0-9]{10}_[a-z0-9]{1,16}$ ]] ||
    die "CAMPAIGND_TEST_RUN=$CAMPAIGND_TEST_RUN: expected <unix seconds>_<lowercase letters or digits>"
SCHEMA_DAYS="${CAMPAIGND_TEST_SCHEMA_DAYS:-2}"
[[ "$SCHEMA_DAYS" =~ ^[0-9]+$ ]] || die "CAMPAIGND_TEST_SCHEMA_DAYS=$SCHEMA_DAYS: expected a number of days"
log "test run $CAMPAIGND_TEST_RUN (PostgreSQL schemas t_${CAMPAIGND_TEST_RUN}_*)"

pg_usable() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v psql >/dev/null; }

# Drops the schemas selected by a WHERE clause on pg_namespace.nspname.
drop_schemas() {
    psql "$CAMPAIGND_TEST_PG_URL" -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
SELECT format('DROP SCHEMA %I CASCADE', nspname) FROM pg_namespace WHERE $1 \gexec
SQL
}

if pg_usable; then
    drop_schemas "nspname ~ '^t_[0-9]{10}_[a-z0-9]+_[0-9a-f]{32}\$'
        AND substring(nspname FROM 3 FOR 10)::bigint < extract(epoch FROM now()) - $SCHEMA_DAYS * 86400" ||
        log "warning: could not drop the test schemas older than $SCHEMA_DAYS days"
fi

on_exit() {
    local status=$?
    if [[ $status -eq 0 ]] && pg_usable; then
        drop_schemas "starts_with(nspname, 't_${CAMPAIGND_TEST_RUN}_')" ||
            log "warning: could not drop this run's test schemas (t_${CAMPAIGND_TEST_RUN}_*)"
    elif [[ $status -ne 0 ]]; then
        log "kept this run's PostgreSQL schemas t_${CAMPAIGND_TEST_RUN}_* for inspection (dropped after $SCHEMA_DAYS days)"
    fi
    return "$status"
}
trap on_exit EXIT

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
