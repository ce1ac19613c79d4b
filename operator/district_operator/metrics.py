"""The operator's Prometheus metrics: reconciles, errors, durations and every API request."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter("district_operator_reconciles_total",
                     "District reconciles by trigger and result", ["trigger", "result"])
RECONCILE_ERRORS = Counter("district_operator_reconcile_errors_total",
                           "Reconciles that raised an unexpected error", ["trigger"])
RECONCILE_SECONDS = Histogram("district_operator_reconcile_duration_seconds",
                              "Time spent reconciling one District", ["trigger"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
API_REQUESTS = Counter("district_operator_api_requests_total",
                       "Requests to the Kubernetes API by verb and kind", ["verb", "kind"])
API_WRITES = Counter("district_operator_api_writes_total",
                     "Writing requests (create, apply, patch, delete) to the Kubernetes API",
                     ["verb", "kind"])
NOTIFICATIONS = Counter("district_operator_notifications_total",
                        "Webhook notifications by result", ["result"])
ROUTES_PUBLISHED = Gauge("district_operator_routes_published",
                         "Shared-mode Districts routed by the gateway (Routed=Published)")
ROUTE_SHARD_WRITES = Counter("district_operator_route_shard_writes_total",
                             "Routing shard ConfigMaps written (identical bytes are skipped)")
ROUTE_PUBLISH_SECONDS = Histogram(
    "district_operator_route_publish_seconds",
    "Seconds from a District change the operator saw to its routing shard written",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

WRITE_VERBS = frozenset({"create", "apply", "patch", "delete"})


def record_request(verb: str, kind: str) -> None:
    API_REQUESTS.labels(verb, kind).inc()
    if verb in WRITE_VERBS:
        API_WRITES.labels(verb, kind).inc()


class DistrictsCollector(Collector):
    """`district_operator_districts{namespace,ready}`, counted from the operator's memory at
    each scrape: a deleted District leaves it the moment it is forgotten."""

    def __init__(self, count: Callable[[], Tally[tuple[str, str]]]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "district_operator_districts",
            "Districts this operator keeps a status for, by namespace and Ready condition",
            labels=["namespace", "ready"])
        for (namespace, ready), number in sorted(self.count().items()):
            family.add_metric([namespace, ready], number)
        yield family


def count_districts(count: Callable[[], Tally[tuple[str, str]]]) -> DistrictsCollector:
    """Publish the districts gauge from `count` ((namespace, Ready status) -> Districts)."""
    collector = DistrictsCollector(count)
    REGISTRY.register(collector)
    return collector


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped by Prometheus
    """Expose /metrics on port (0 disables it)."""
    if port:
        start_http_server(port, addr=address)
