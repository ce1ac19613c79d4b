"""`python -m district_devtools.localcluster start [--node]|stop|env|status`, by hand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from district_devtools.localcluster.controlplane import (
    STATE_FILE,
    ControlPlane,
    remove_state,
    repo_root,
)
from district_devtools.localcluster.realnode import (
    GATEWAY,
    NODE_STATE_FILE,
    RealNode,
    build_images,
    node_binaries_dir,
    prepare_bridge,
)


def default_dir() -> Path:
    base = os.environ.get("DISTRICT_SFTP_CACHE", str(Path.home() / ".cache" / "district-sftp"))
    return Path(base) / "local-cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "env", "status"])
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="where the cluster keeps its state (default: %(default)s)")
    parser.add_argument("--node", action="store_true",
                        help="start: also a real node (containerd, kubelet, kube-scheduler, "
                             "kube-proxy) running the image built from the Dockerfile")
    args = parser.parse_args(argv)
    directory: Path = args.dir
    existing = ControlPlane.load(directory) if (directory / STATE_FILE).exists() else None
    node_dir = directory / "node"
    node = RealNode.load(node_dir) if (node_dir / NODE_STATE_FILE).exists() else None

    if args.action == "start":
        if existing and existing.running() and (node is not None or not args.node):
            print(existing.kubeconfig)
            return 0
        if node is not None:
            node.stop(existing)
        if existing:
            existing.stop()
        remove_state(directory)
        if args.node:
            prepare_bridge()
        plane = ControlPlane.start(directory, address=GATEWAY if args.node else "127.0.0.1")
        if args.node:
            repo = repo_root()
            if repo is None:
                print("local-cluster: --node needs the source checkout", file=sys.stderr)
                return 2
            try:
                node = RealNode.start(plane, node_dir, node_binaries_dir(repo),
                                      build_images(repo))
            except BaseException:
                plane.stop()
                RealNode.remove_bridge()
                raise
            print(f"local-cluster: node {node.name} Ready ({node.address})", file=sys.stderr)
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
        if node is not None:
            node.stop(existing)
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
