#!/usr/bin/env bash
# The `zoo-import` memory benchmark: a Small CNN Zoo dataset directory of about 1 GB is generated
# (weights.npy: 50,400 rows × 4,970 float32 = 5,600 runs × 9 steps; metrics.csv.gz; layout.csv, the
# published layout), imported by a release build, and the run's peak resident memory and time are
# printed. The issue's target: below 1 GB for any zoo size (the reader streams rows; it never holds
# the file). Needs python3 (standard library only) and GNU time (`apt-get install time`).
#
#   benches/import-memory.sh [ROWS]        # default 50400 (1.0 GB); 270000 rows is the real 5.4 GB
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-50400}
[ -x /usr/bin/time ] || { echo "import-memory: needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 2; }
work=$(mktemp -d /tmp/wspace-import-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$work/zoo" "$rows" <<'PY'
import gzip, os, random, struct, sys
out, rows = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
width, steps = 4970, 9
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, width)
header += " " * (63 - (10 + len(header)) % 64) + "\n"
rng = random.Random(0)
row = struct.pack("<%df" % width, *[rng.gauss(0.0, 0.1) for _ in range(width)])
with open(os.path.join(out, "weights.npy"), "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    for _ in range(rows):
        f.write(row)  # one random row repeated: the reader's cost does not depend on the values
layout = [("conv2d/bias", (16,)), ("conv2d/kernel", (3, 3, 1, 16)), ("conv2d_1/bias", (16,)),
          ("conv2d_1/kernel", (3, 3, 16, 16)), ("conv2d_2/bias", (16,)), ("conv2d_2/kernel", (3, 3, 16, 16)),
          ("dense/bias", (10,)), ("dense/kernel", (16, 10))]
with open(os.path.join(out, "layout.csv"), "w") as f:
    f.write("varname,start_idx,end_idx,shape\n")
    start = 0
    for name, shape in layout:
        n = 1
        for d in shape:
            n *= d
        f.write('sequential/%s:0,%d,%d,"%s"\n' % (name, start, start + n, str(shape).replace(",)", ",)")))
        start += n
    assert start == width
with gzip.open(os.path.join(out, "metrics.csv.gz"), "wt") as f:
    f.write("config.activation,config.dropout,config.learning_rate,config.optimizer,modeldir,step,"
            "test_accuracy,test_loss,train_accuracy,train_loss\n")
    for r in range(rows):
        run, step = divmod(r, steps)
        f.write("relu,0.0,0.01,adam,fmnist/run%06d,%d,0.5,1.5,0.5,1.5\n" % (run, step * 1000))
PY
ls -l "$work/zoo"
cat > "$work/import.toml" <<TOML
[pipeline]
name = "import-memory"

[stages.import]
kind = "zoo-import"
format = "small-cnn-zoo"
path = "zoo"
final_epoch = -1
early_epoch = 0
TOML
cargo build --release --locked --quiet
/usr/bin/time -f "peak resident memory: %M KiB; wall time: %e s" target/release/wspace run -q --cache "$work/cache" "$work/import.toml"
target/release/wspace show --cache "$work/cache" "$work/import.toml" import | sed -n "/^metrics:/,\$p"
