#!/usr/bin/env bash
# Mutation check: inserts small bugs (cargo-mutants) into the code that carries campaignd's
# invariants (store, engine, audience, tracking), runs the tests that guard them against each
# mutant, and reports which mutants SURVIVE (no test noticed). Not part of CI: it takes long.
#
# Usage:
#   scripts/mutants.sh [--minutes N] [--all] [--list]
#     --minutes N   time budget for the whole run (default 60); what was not reached is
#                   listed as not tested. cargo-mutants writes its outcomes as it goes, so a
#                   run cut by the budget still reports everything it finished.
#     --all         every function of the four crates, not only the invariant carriers below
#                   (several hours on two cores)
#     --only REGEX  only functions whose name matches REGEX (a subset of the guarded ones
#                   for a short run, e.g. '(settle|claim)')
#     --in-place    mutate this tree and build in its own target/ (warm builds, no baseline
#                   run: much faster; do not edit the tree meanwhile, it is restored after
#                   each mutant)
#     --no-e2e      run only the four crates' own tests against each mutant, not the e2e
#                   package (faster; the engine and store invariant tests live in the crates)
#     --list        only list the mutants that would be tested
#
# Output: target/mutants/mutants.out/ (cargo-mutants' own files: missed.txt, caught.txt,
# outcomes.json, one log per mutant) and a summary on stdout. Exit status 1 when a mutant
# of a GUARDED function survived: those are the invariants ARCHITECTURE.md promises a test
# for, so a survivor there is a hole in the suite.
#
# The tests run per mutant are those of the mutated package plus the e2e package, less the
# heavy ones (kill -9 crash, replicas, real Kannel), which would make each mutant take
# minutes. PostgreSQL must be up for the _on_postgres tests (as for scripts/test.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

minutes=60
all=0
list=0
only=""
in_place=0
e2e=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
        --all) all=1; shift ;;
        --in-place) in_place=1; shift ;;
        --no-e2e) e2e=0; shift ;;
        --only) only="${2:?--only needs a regular expression}"; shift 2 ;;
        --list) list=1; shift ;;
        -h|--help) print_usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$minutes" =~ ^[0-9]+$ ]] || die "--minutes takes a whole number, not '$minutes'"

if ! command -v cargo-mutants >/dev/null; then
    log "installing cargo-mutants (cargo install --locked, a few minutes)"
    cargo install --locked cargo-mutants
fi

# Functions that carry a stated invariant (ARCHITECTURE.md, "Invariants and their tests").
# A surviving mutant in one of these fails the script.
GUARDED='(claim|settle|reclaim_expired_leases|expire_overdue|start_run|skip_slot|try_singleton_lease|fire_timer|due_timers|transition_wave|set_wave_window|insert_contacts|idem_key|record_delivery|record_response|set_opt_out|send_claimed|dispatch_round|backoff|plan_wave|begin_planning|fire_window_timer|apply_cap|recent_contact_counts|split|is_control|next_allowed|process_batch|in_window|first_word|mask)'

args=(
    --package store --package engine --package audience --package tracking
    --test-package store --test-package engine --test-package audience
    --test-package tracking
    --timeout 600 --build-timeout 900
    --output target/mutants
    --cargo-test-arg=--test-threads=2
    --cargo-test-arg=--skip=kill_nine
    --cargo-test-arg=--skip=replica
    --cargo-test-arg=--skip=kannel
    --cargo-test-arg=--skip=real_
    # Test helpers and Debug impls are not product behaviour.
    --exclude 'crates/store/src/testing.rs'
    --exclude-re 'impl Debug'
)
if [[ "$e2e" -eq 1 ]]; then
    args+=(--test-package campaignd-tests)
fi
if [[ "$in_place" -eq 1 ]]; then
    args+=(--in-place --baseline skip)
else
    # One build directory at a time: two cores.
    args+=(--jobs 1)
fi
if [[ -n "$only" ]]; then
    args+=(--re "$only")
elif [[ "$all" -eq 0 ]]; then
    args+=(--re "$GUARDED")
fi

if [[ "$list" -eq 1 ]]; then
    exec cargo mutants "${args[@]}" --list
fi

export CAMPAIGND_TEST_PG_URL="${CAMPAIGND_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Results of an earlier run must never be read as this run's.
rm -rf target/mutants/mutants.out target/mutants/mutants.out.old
mkdir -p target/mutants
log "mutating store, engine, audience, tracking for at most $minutes min (cargo mutants ${args[*]})"
status=0
timeout --signal=INT --kill-after=60 "$((minutes * 60))" cargo mutants "${args[@]}" || status=$?
out=target/mutants/mutants.out
# cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; 1 bad usage, 4 the tests
# fail without any mutant. 124 and 130: our time budget cut it short.
case "$status" in
    0|2|3|124|130) ;;
    *) die "cargo-mutants failed (exit $status); no result to report" ;;
esac
[[ -f "$out/outcomes.json" ]] || die "cargo-mutants wrote no results (exit $status)"

count() { local n; n=$(grep -c . "$out/$1" 2>/dev/null); echo "${n:-0}"; }
echo
echo "== mutation check: caught $(count caught.txt), missed $(count missed.txt), timeout $(count timeout.txt), unviable $(count unviable.txt) =="
if [[ "$status" -eq 124 || "$status" -eq 130 ]]; then
    echo "(the time budget of $minutes min ran out; mutants not reached are not counted)"
fi
if [[ -s "$out/missed.txt" ]]; then
    echo "Surviving mutants (no test failed):"
    sed 's/^/  /' "$out/missed.txt"
fi
guarded_missed=$(grep -E "[ :]${GUARDED}[(<: ]" "$out/missed.txt" 2>/dev/null || true)
if [[ -n "$guarded_missed" ]]; then
    echo
    echo "SURVIVORS IN GUARDED FUNCTIONS (an invariant without a test that notices):"
    printf '  %s\n' "$guarded_missed"
    exit 1
fi
echo "No mutant of a guarded function survived."
