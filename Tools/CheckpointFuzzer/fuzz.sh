#!/usr/bin/env bash
# Fuzzes the checkpoint loader with libFuzzer for a bounded time.
#   Tools/CheckpointFuzzer/fuzz.sh [SECONDS]   (default 300)
# The seed corpus is Tools/CheckpointFuzzer/corpus; what libFuzzer finds
# interesting goes to a temporary directory; a crash leaves crash-* files in
# the current directory and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
# A separate scratch path: the fuzzing flags instrument every Swift module.
# (SwiftPM mis-handles changed flags in a reused scratch path, so start clean;
# Swift's lld links the libFuzzer build where gold fails.)
rm -rf .build-fuzz
swift build -c release --product checkpoint-fuzzer --scratch-path .build-fuzz \
  -Xswiftc -use-ld=lld -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING
work=$(mktemp -d)
.build-fuzz/release/checkpoint-fuzzer "$work" Tools/CheckpointFuzzer/corpus \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1
echo "fuzz: no crash in $seconds s; corpus grew to $(ls "$work" | wc -l) inputs in $work"
