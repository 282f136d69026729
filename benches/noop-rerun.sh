#!/usr/bin/env bash
# No-op rerun of a 20-stage chain (everything cached): the runner's fixed cost.
# Target: median <= 50 ms. Usage: benches/noop-rerun.sh [path/to/wspace]   (needs hyperfine)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/wspace}
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
"$bin" run "$here/chain20.toml" --cache "$cache" > /dev/null 2>&1
hyperfine --warmup 3 --runs 30 "$bin run $here/chain20.toml --cache $cache"
