#!/usr/bin/env bash
# Runs the ipc test binaries under valgrind's memcheck, children included.
# Usage: crates/troika/tests/valgrind.sh [test-name-filter]
# Exit status is non-zero if valgrind reports an error or a test fails.
# valgrind does not know pidfd_open (syscall 434) and warns about it; troika
# then falls back to kill(pid, 0) plus /proc/<pid>/stat to tell a dead holder.
set -euo pipefail
cd "$(dirname "$0")/../../.."
filter="${1:-}"
status=0
for t in ipc_locks ipc_queue ipc_pipe ipc_shared ipc_manager; do
    bin=$(cargo test -p troika --test "$t" --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    echo "== $t ($bin)"
    # --trace-children: the re-executed children run under valgrind too.
    if ! valgrind --quiet --error-exitcode=1 --trace-children=yes \
        "$bin" --test-threads=1 $filter; then
        status=1
    fi
done
exit $status
