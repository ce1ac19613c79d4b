"""The shared gateway's two Secrets, which the operator owns: its key pair and its host keys."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from district_operator import names


def _labels(gateway: str) -> dict[str, str]:
    return {**names.gateway_selector(gateway), names.LABEL_MANAGED_BY: names.FIELD_MANAGER}


def _secret(namespace: str, name: str, gateway: str, files: Mapping[str, str],
            annotations: Mapping[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(gateway)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {file_name: base64.b64encode(content.encode()).decode()
                     for file_name, content in sorted(files.items())}}


def gateway_key_secret(namespace: str, gateway: str, key_files: Mapping[str, str]
                       ) -> dict[str, Any]:
    """The key pair the gateway logs in to district servers with (keys.generate_gateway_key):
    the private half for the gateway's pods, the public half copied into every shared-mode
    District's authorized-keys Secret. No owner: it outlives any District."""
    return _secret(namespace, names.gateway_key_secret(gateway), gateway, key_files, None)


def gateway_host_keys_secret(namespace: str, gateway: str, key_files: Mapping[str, str],
                             annotations: Mapping[str, str]) -> dict[str, Any]:
    """The gateway's host keys, with the layout and rotation annotations of a District's
    host-key Secret (rotation.py), so the gateway reads them as `sftpd serve` does."""
    return _secret(namespace, names.gateway_host_keys_secret(gateway), gateway, key_files,
                   annotations)
