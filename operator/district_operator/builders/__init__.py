"""Pure builders: a typed District plus explicit inputs in, Kubernetes manifests (dicts) out."""

from __future__ import annotations

from typing import Any

from district_operator.builders.common import BuildInputs, Resources
from district_operator.builders.jobs import cronjob, cronjobs
from district_operator.builders.network import network_policy, service
from district_operator.builders.pull import pull_network_policy
from district_operator.builders.secrets import authorized_keys_secret, host_keys_secret
from district_operator.builders.server import deployment
from district_operator.builders.storage import data_pvc
from district_operator.model import District

Manifest = dict[str, Any]

__all__ = [
    "BuildInputs", "Manifest", "Resources", "authorized_keys_secret", "cronjob", "cronjobs",
    "data_pvc", "deployment", "desired_children", "host_keys_secret", "network_policy",
    "pull_network_policy", "service",
]


def desired_children(district: District, inputs: BuildInputs,
                     authorized_keys_file: str) -> list[Manifest]:
    """The children applied on each reconcile (the host-key Secret is created once, apart)."""
    children = [
        authorized_keys_secret(district, authorized_keys_file),
        data_pvc(district),
        deployment(district, inputs),
        service(district),
        network_policy(district),
        *cronjobs(district, inputs).values(),
    ]
    pull_policy = pull_network_policy(district)
    if pull_policy is not None:
        children.append(pull_policy)
    return children
