"""`district-operator run`: parse the configuration and run the kopf operator with our handlers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf

from district_operator import allocator, api, config, handlers, metrics, names, status
from district_operator.gatewaystate import GatewayPoller, GatewayState
from district_operator.jobrecorder import JobRecorder
from district_operator.notifications import Notifier
from district_operator.reconciler import Reconciler
from district_operator.resync import Resyncer
from district_operator.routepublisher import RoutePublisher
from district_operator.watchcache import WatchCache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="district-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="reconcile Districts until stopped")
    config.add_arguments(run)
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def run(settings: config.OperatorConfig, verbose: bool = False) -> int:
    allocator.limit_malloc_arenas()  # before any thread starts
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kube = api.Kube(api.load_configuration(pool_size=max(settings.workers * 2, 16)),
                    field_manager=names.FIELD_MANAGER, on_request=metrics.record_request,
                    extra_kinds=api.GATEWAY_KINDS)
    notifier = Notifier()
    cache = WatchCache()
    metrics.count_districts(cache.districts_by_readiness)
    clock = status.shifted_clock(settings.clock_offset_seconds)
    gateway = GatewayState(kube, settings.gateway, clock)
    publisher = RoutePublisher(kube, settings.gateway, settings.service_mode, settings.namespaces,
                               verify_seconds=settings.resync_seconds)
    reconciler = Reconciler(kube, settings.inputs, cache, clock, notifier, gateway,
                            settings.service_mode, publisher)
    # The gateway's Secrets are created at start (and its Service watched) when one is given.
    poller = GatewayPoller(gateway, reconciler.gateway_changed)
    poller.start()
    recorder = JobRecorder(kube, cache, notifier, clock)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings, reconciler, recorder)
    metrics.serve(settings.metrics_port)
    resyncer = Resyncer(kube, settings.namespaces, settings.resync_seconds,
                        lambda body: handlers.resync_district(reconciler, body), settings.workers)
    resyncer.start()
    publisher.start()
    liveness = (f"http://0.0.0.0:{settings.health_port}/healthz"
                if settings.health_port else None)
    try:
        kopf.run(
            registry=registry,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            namespaces=list(settings.namespaces),
            clusterwide=settings.all_namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        poller.stop()
        resyncer.stop()
        publisher.stop()
        notifier.close()
        kube.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(config.from_args(args), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
