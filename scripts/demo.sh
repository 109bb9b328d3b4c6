#!/usr/bin/env bash
# Runs the campaignd demo: a fresh embedded SQLite database, a synthetic base of 100,000
# subscribers, workflows/autumn-enrollment.yaml through its waves (SMS offer, then outbound
# calls to non-responders) with a simulated population, and the evaluation against the
# control group. Needs nothing but the Rust toolchain; extra arguments go to `campaignd demo`
# (see `--help`), e.g. `scripts/demo.sh --subscribers 20000 --day-seconds 1`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"
command -v cargo >/dev/null || die "cargo is not installed: this project needs the Rust toolchain (rustup)"
log "building campaignd (the first build takes a few minutes)"
cargo build --quiet -p campaignd
exec target/debug/campaignd demo "$@"
