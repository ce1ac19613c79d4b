"""`python -m district_devtools.localcluster start|stop|env|status`: the control plane by hand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from district_devtools.localcluster.controlplane import STATE_FILE, ControlPlane, remove_state


def default_dir() -> Path:
    base = os.environ.get("DISTRICT_SFTP_CACHE", str(Path.home() / ".cache" / "district-sftp"))
    return Path(base) / "local-cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "env", "status"])
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="where the cluster keeps its state (default: %(default)s)")
    args = parser.parse_args(argv)
    directory: Path = args.dir
    existing = ControlPlane.load(directory) if (directory / STATE_FILE).exists() else None

    if args.action == "start":
        if existing and existing.running():
            print(existing.kubeconfig)
            return 0
        if existing:
            existing.stop()
        remove_state(directory)
        plane = ControlPlane.start(directory)
        print(f"local-cluster: API server {plane.server}; "
              f"export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
        print(plane.kubeconfig)
        return 0
    if existing is None:
        if args.action == "stop":
            return 0
        print("local-cluster: not running (start it with `scripts/local-cluster start`)",
              file=sys.stderr)
        return 1
    if args.action == "stop":
        existing.stop()
        remove_state(directory)
        return 0
    if args.action == "env":
        print(f"export KUBECONFIG={existing.kubeconfig}")
        return 0
    running = existing.running()
    print(f"{'running' if running else 'stopped'} {existing.server} {existing.kubeconfig}")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
