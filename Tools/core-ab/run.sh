#!/usr/bin/env bash
# Compares the C core at another revision with the working tree's, in one
# process: builds libCCharRNN.so at REV (in a temporary git worktree) and
# here, loads both, and times the Adam step, a whole training step
# (forward, backward, Adam) and one-stream sampling steps of each, taking turns, so a shared machine's slow
# moments fall on both alike. Prints the medians and new/old.
# Usage: Tools/core-ab/run.sh REV [B=T H ROUNDS CELL]   (default: the reference 100 512 9 lstm)
# A CELL other than lstm needs a REV whose core has cells (an older core
# would ignore the cell and run an LSTM).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: Tools/core-ab/run.sh REV [B=T H ROUNDS CELL]}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/old" "$rev"
(cd "$work/old" && swift build -c release --product CCharRNN --scratch-path "$work/old/.build" >/dev/null)
swift build -c release --product CCharRNN >/dev/null
cp "$work/old/.build/release/libCCharRNN.so" "$work/libold.so"
cp .build/release/libCCharRNN.so "$work/libnew.so"
cc -O2 -Iinclude Tools/core-ab/ab.c -L"$work" -lnew -Wl,-rpath,"$work" -ldl -o "$work/ab"
lscpu | grep -m1 'Model name' || true
(cd "$work" && ./ab "${2:-100}" "${3:-512}" "${4:-9}" "${5:-lstm}")
