#!/usr/bin/env bash
# Builds and runs Tools/Downstream against this repository's HEAD, consumed
# the way a user's package consumes it: by URL and version. It clones the
# repository, tags HEAD 0.1.0 (dropping any other tags, so that version is
# the one picked), and points the downstream manifest at the clone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone -q "$repo" "$work/CharRNN"
git -C "$work/CharRNN" tag -l | xargs -r git -C "$work/CharRNN" tag -d >/dev/null
git -C "$work/CharRNN" tag 0.1.0
cp -R "$repo/Tools/Downstream" "$work/Downstream"
rm -rf "$work/Downstream/.build"

cd "$work/Downstream"
export CHARRNN_PACKAGE_URL="file://$work/CharRNN"
swift build 2>&1 | tail -n 3
swift run --skip-build downstream
