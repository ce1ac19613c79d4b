"""The two Secrets: host keys (created once, never regenerated) and the validated client keys."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from district_operator import names
from district_operator.builders.common import SharedMode, metadata
from district_operator.model import District


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def host_keys_secret(district: District, key_files: Mapping[str, str],
                     annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The host-key Secret holding freshly generated keys (see keys.generate_host_keys), with
    the rotation's annotations (see rotation.initial_annotations)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(district, names.host_keys_secret(district.name),
                             names.COMPONENT_HOST_KEYS, annotations=annotations),
        "type": "Opaque",
        "data": {file_name: _b64(content) for file_name, content in sorted(key_files.items())},
    }


def authorized_keys_secret(district: District, authorized_keys_file: str,
                           shared: SharedMode | None = None) -> dict[str, Any]:
    """The Secret mounted at the server's authorized_keys path: accepted keys only; in shared
    mode also the gateway's public key beside them, so that a new gateway key reaches the
    running server as a volume update (it rereads the file), not as a restart."""
    data = {names.AUTHORIZED_KEYS_FILE: _b64(authorized_keys_file)}
    if shared is not None and shared.gateway_public_key:
        data[names.GATEWAY_PUBLIC_KEY_FILE] = _b64(shared.gateway_public_key.strip() + "\n")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(district, names.authorized_keys_secret(district.name),
                             names.COMPONENT_AUTHORIZED_KEYS),
        "type": "Opaque",
        "data": data,
    }
