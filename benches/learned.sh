#!/usr/bin/env bash
# The learned stages' training loops side by side with PyTorch on the same shapes (README, Benchmarks):
# each `wspace bench NAME` (JSON) then its peer in scripts/reference/, on THREADS threads, one after the
# other. Prints one line per pair: the two medians and the ratio of their throughputs (wspace / PyTorch).
# Usage: benches/learned.sh THREADS [path/to/wspace] [path/to/python with torch]
#   e.g. benches/learned.sh 1 target/release/wspace /work/venv-ref/bin/python
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
threads=${1:?usage: benches/learned.sh THREADS [wspace] [python]}
bin=${2:-$here/../target/release/wspace}
py=${3:-python3}
ref=$here/../scripts/reference
export RAYON_NUM_THREADS=$threads

# name | wspace bench arguments | PyTorch script and arguments | the throughput field of each
pairs=(
  "align|align --epochs 10|bench_align_torch.py --epochs 10|pairs_per_s|pairs_per_s"
  "autoencoder mlp|autoencoder --epochs 5|bench_autoencoder_torch.py --architecture mlp --epochs 5|rows_per_s|models_per_s"
  "autoencoder transformer|autoencoder --architecture transformer --epochs 2|bench_autoencoder_torch.py --architecture transformer --epochs 2|rows_per_s|models_per_s"
  "generator|generator --epochs 2|bench_generator_torch.py --epochs 2|rows_per_s|examples_per_s"
  "flow|flow --epochs 1|bench_flow_torch.py --epochs 1|rows_per_s|examples_per_s"
  "refine transformer|refine --models 16|bench_refine_torch.py --codec transformer --models 16|rows_per_s|models_per_s"
  "refine mlp|refine --codec mlp --models 16|bench_refine_torch.py --codec mlp --models 16|rows_per_s|models_per_s"
)
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
for p in "${pairs[@]}"; do
  IFS='|' read -r name ours theirs f_ours f_theirs <<< "$p"
  a=$("$bin" bench $ours --format json)
  b=$("$py" "$ref"/$theirs --threads "$threads")
  x=$(echo "$a" | field "$f_ours"); y=$(echo "$b" | field "$f_theirs")
  printf '%-24s %s threads: wspace %10.1f/s (median %.3f s)  PyTorch %10.1f/s (median %.3f s)  ratio %.2f\n' \
    "$name" "$threads" "$x" "$(echo "$a" | field median_s)" "$y" "$(echo "$b" | field median_s)" \
    "$(python3 -c "print($x / $y)")"
  if [ "$name" = generator ]; then gen_images=$(echo "$a" | field images_per_s); fi
done
z=$("$bin" bench zoo --models 8 --epochs 3 --threads "$threads" --format json)
zoo=$(echo "$z" | field images_per_second)
printf '%-24s %s threads: generator %.0f images/s, zoo training %.0f images/s (wspace bench zoo): %.2f\n' \
  "behavioural term" "$threads" "$gen_images" "$zoo" "$(python3 -c "print($gen_images / $zoo)")"
