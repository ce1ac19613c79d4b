"""Benchmark: `sftpd retention` deleting 100,000 files against `find -delete` on the same tree.

Builds two identical trees of processed epochs (all processed 60 days ago, so a 30-day sweep
deletes every one), then times the real command line on one and `find -delete` on the other,
alternating which goes first on each repeat, and prints the figures side by side.

    python bench/retention_vs_find.py                      # 100,000 files in 100 epochs
    python bench/retention_vs_find.py --files 10000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 11, 28, 3, 17, tzinfo=UTC)


def build_tree(root: Path, files: int, epochs: int) -> None:
    """upload-processed/<epoch>/ with files spread over a few subdirectories, and a report."""
    processed = root / "upload-processed"
    per_epoch = files // epochs
    payload = b"sourcedId,givenName,familyName\n" + b"1,Ada,Lovelace\n" * 4
    processed_at = (NOW - timedelta(days=60)).isoformat().replace("+00:00", "Z")
    for e in range(epochs):
        epoch = processed / f"2026-09-{e:04d}"
        for sub in range(4):
            (epoch / f"part{sub}").mkdir(parents=True)
        # processing.json counts as one of the epoch's files.
        (epoch / "processing.json").write_text(json.dumps({"processedAt": processed_at}))
        for i in range(per_epoch - 1):
            fd = os.open(epoch / f"part{i % 4}" / f"f{i:06d}.csv",
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload)
            os.close(fd)


def count_files(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def time_retention(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftpd", "retention", "--root", str(root),
                    "--processed-days", "30", "--now", NOW.isoformat()],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    assert count_files(root / "upload-processed") == 0, "retention left files behind"
    return elapsed


def time_find(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["find", str(root / "upload-processed"), "-mindepth", "1", "-delete"],
                   check=True)
    elapsed = time.perf_counter() - start
    assert count_files(root / "upload-processed") == 0
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build the trees (default: a temporary directory)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="retention-bench-", dir=args.workdir))
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for round_number in range(args.repeat):
            tree_a, tree_b = base / f"a{round_number}", base / f"b{round_number}"
            build_tree(tree_a, args.files, args.epochs)
            build_tree(tree_b, args.files, args.epochs)
            files = count_files(tree_a)
            subprocess.run(["sync"], check=True)
            if round_number % 2 == 0:
                ours.append(time_retention(tree_a))
                theirs.append(time_find(tree_b))
            else:
                theirs.append(time_find(tree_b))
                ours.append(time_retention(tree_a))
            shutil.rmtree(tree_a)
            shutil.rmtree(tree_b)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mine, ref = statistics.median(ours), statistics.median(theirs)
    print(f"tree: {files} files in {args.epochs} epochs, {args.repeat} rounds (median)")
    print(f"{'':28}{'sftpd retention':>18}{'find -delete':>16}{'ratio':>8}")
    print(f"{'seconds':28}{mine:>18.2f}{ref:>16.2f}{mine / ref:>7.2f}x")
    print(f"{'files per second':28}{files / mine:>18,.0f}{files / ref:>16,.0f}")
    print(f"all rounds: retention {[round(t, 2) for t in ours]}, "
          f"find {[round(t, 2) for t in theirs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
