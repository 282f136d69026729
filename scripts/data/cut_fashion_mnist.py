#!/usr/bin/env python3
"""Cut the embedded Fashion-MNIST subset that wspace ships in assets/fashion-mnist/.

Selection rule (deterministic, no randomness): walk each split in file order and keep an image
when fewer than PER_CLASS images of its label have been kept so far -- the first 1,000 training
images and the first 200 test images of each of the 10 classes. Kept images stay in file order.

Input: the IDX .gz files of Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist/).
Output: IDX files, gzip-compressed with level 9, mtime 0 and no file name in the header, so the
bytes are reproducible. Plain Python 3, no numpy.

Usage: python3 scripts/data/cut_fashion_mnist.py [SRC_DIR] [OUT_DIR]
"""

import gzip
import hashlib
import struct
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "assets" / "fashion-mnist")
SPLITS = {"train": 1000, "t10k": 200}


def read_idx(path):
    data = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte IDX file"
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    item = 1
    for d in dims[1:]:
        item *= d
    assert len(body) == dims[0] * item, f"{path}: body has {len(body)} bytes, header says {dims}"
    return dims, item, body


def write_idx(path, dims, body):
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
            gz.write(header + body)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for split, per_class in SPLITS.items():
        img_dims, img_size, images = read_idx(SRC / f"{split}-images-idx3-ubyte.gz")
        lab_dims, _, labels = read_idx(SRC / f"{split}-labels-idx1-ubyte.gz")
        assert img_dims[0] == lab_dims[0], f"{split}: {img_dims[0]} images but {lab_dims[0]} labels"
        kept, counts = [], {}
        for i, label in enumerate(labels):
            if counts.get(label, 0) < per_class:
                counts[label] = counts.get(label, 0) + 1
                kept.append(i)
        assert sorted(counts) == list(range(10)) and all(c == per_class for c in counts.values()), counts
        out_images = b"".join(images[i * img_size : (i + 1) * img_size] for i in kept)
        out_labels = bytes(labels[i] for i in kept)
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", (len(kept),) + tuple(img_dims[1:]), out_images)
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", (len(kept),), out_labels)
    for f in sorted(OUT.glob("*.gz")):
        print(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}")


if __name__ == "__main__":
    main()
