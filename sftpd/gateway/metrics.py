"""The gateway's Prometheus metrics: a registry of its own (not the district server's)."""

from __future__ import annotations

from sftpd.server.metrics import Registry, process_collector

REGISTRY = Registry()
REGISTRY.collectors.append(process_collector)
CONNECTIONS = REGISTRY.gauge("sftpd_gateway_open_connections", "Client connections open")
LOGINS = REGISTRY.counter("sftpd_gateway_logins_total", "Logins routed to a district")
AUTH_FAILURES = REGISTRY.counter("sftpd_gateway_auth_failures_total",
                                 "Failed logins at the gateway", ("reason",))
REJECTED = REGISTRY.counter("sftpd_gateway_connections_rejected_total",
                            "Connections refused before auth", ("reason",))
BACKEND_FAILURES = REGISTRY.counter("sftpd_gateway_backend_failures_total",
                                    "Channels whose district server could not be used")
ROUTES = REGISTRY.gauge("sftpd_gateway_routes", "Logins in the routing table (clashes included)")
SHARDS_REFUSED = REGISTRY.counter("sftpd_gateway_route_shards_refused_total",
                                  "Routing shard files refused (their last good data kept)")
# The refusals in force: a pod started on a bad shard refuses it before its first scrape, so
# the counter starts at 1 and never increases; this says so for as long as it lasts.
SHARDS_REFUSED_NOW = REGISTRY.gauge("sftpd_gateway_route_shards_refused",
                                    "Routing shard files refused now, each until it changes")
