"""The user's connection to the cluster: kubeconfig, --context and namespace, and District reads."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from district_operator import api, names
from district_operator.model import District, InvalidDistrictError, parse_district
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kubectl_district.errors import PluginError

# Writes made by the plugin carry this field manager, so `managedFields` tell them apart from
# the operator's own writes and from GitOps applies.
FIELD_MANAGER = "kubectl-district"


def add_arguments(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """The connection options; on subcommands they default to SUPPRESS so the top level wins."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    parser.add_argument("-n", "--namespace", default=default(None),
                        help="the District's namespace (default: the context's namespace)")
    parser.add_argument("--context", default=default(None),
                        help="the kubeconfig context to use (default: the current context)")
    parser.add_argument("--kubeconfig", default=default(None),
                        help="the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    chosen = active if context is None else next(
        (c for c in contexts or [] if c.get("name") == context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace or "default")


@dataclass
class Session:
    """An API client acting as the user, and the namespace commands work in."""

    kube: api.Kube
    namespace: str

    @classmethod
    def open(cls, args: argparse.Namespace) -> Session:
        configuration = k8s_client.Configuration()
        kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
        try:
            # KUBECONFIG is read here, not at import time, and may list several files.
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=args.context,
                client_configuration=configuration)
            namespace = args.namespace or _context_namespace(kubeconfig, args.context)
        except (k8s_config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}",
                              "set KUBECONFIG or pass --kubeconfig / --context") from None
        # No request hook: the operator's metrics count the operator's requests only.
        return cls(api.Kube(configuration, field_manager=FIELD_MANAGER), namespace)

    def close(self) -> None:
        self.kube.close()

    def district(self, name: str) -> tuple[dict[str, Any], District]:
        """The District's API object and its typed form; a clear error when there is none."""
        body = self.kube.get(names.KIND, self.namespace, name)
        if body is None:
            raise PluginError(
                f"District {name!r} not found in namespace {self.namespace!r}",
                f"list the Districts with `kubectl district list -n {self.namespace}` "
                "(or -A for every namespace), or pick the namespace with -n")
        try:
            return body, parse_district(body)
        except InvalidDistrictError as exc:
            raise PluginError(f"District {name!r} is malformed: {exc}") from None



def published(body: Mapping[str, Any], name: str, *fields: str) -> dict[str, Any]:
    """The District's status, failing clearly when the operator has not published `fields`."""
    status = dict(body.get("status") or {})
    missing = [f for f in fields if not status.get(f)]
    if not missing:
        return status
    if not status:
        raise PluginError(
            f"District {name!r} has no status yet: the operator has not reconciled it",
            "is the operator running and watching this namespace? "
            "`kubectl get deploy -A -l app.kubernetes.io/name=district-sftp` shows it")
    service_hint = ("a LoadBalancer Service gets its address from the cloud's load balancer "
                    "controller: `kubectl get svc "
                    f"{names.service(name)}` shows whether it has one yet")
    raise PluginError(
        f"District {name!r} has no published {missing[0]} in its status yet",
        service_hint if "endpoint" in missing or "knownHosts" in missing else
        "wait for the operator to finish reconciling it (`kubectl district status`)")
