"""Pure builders: a typed District plus explicit inputs in, Kubernetes manifests (dicts) out."""

from __future__ import annotations

from typing import Any

from district_operator.builders.common import BuildInputs, Resources, SharedMode
from district_operator.builders.jobs import cronjob, cronjobs
from district_operator.builders.network import network_policy, service
from district_operator.builders.pull import pull_network_policy
from district_operator.builders.secrets import authorized_keys_secret, host_keys_secret
from district_operator.builders.server import deployment
from district_operator.builders.storage import data_pvc
from district_operator.model import District

Manifest = dict[str, Any]

__all__ = [
    "BuildInputs", "Manifest", "Resources", "SharedMode", "authorized_keys_secret", "cronjob",
    "cronjobs", "data_pvc", "deployment", "desired_children", "host_keys_secret",
    "network_policy", "pull_network_policy", "service",
]


def desired_children(district: District, inputs: BuildInputs, authorized_keys_file: str,
                     shared: SharedMode | None = None) -> list[Manifest]:
    """The children applied on each reconcile (the host-key Secret is created once, apart);
    `shared` None: spec.service.mode dedicated."""
    children = [
        authorized_keys_secret(district, authorized_keys_file, shared),
        data_pvc(district),
        deployment(district, inputs, shared),
        service(district, shared),
        network_policy(district, shared),
        *cronjobs(district, inputs).values(),
    ]
    pull_policy = pull_network_policy(district)
    if pull_policy is not None:
        children.append(pull_policy)
    return children
