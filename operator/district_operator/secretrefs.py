"""Reading a Secret key a District names (keys, database URI, webhook URL) through the API."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from district_operator import api
from district_operator.model import SecretKeyRef


def decode(secret: Mapping[str, Any], key: str) -> str | None:
    """A Secret's key as text (None when absent); bytes that are not UTF-8 are replaced."""
    value = (secret.get("data") or {}).get(key)
    if value is None:
        return None
    return base64.b64decode(value).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SecretValue:
    """What a SecretKeyRef led to: the key's text, or which of the two is missing."""

    secret_exists: bool
    value: str | None  # None when the Secret or the key is absent, or the value is blank


def read(kube: api.Kube, namespace: str, ref: SecretKeyRef,
         cache: dict[str, dict[str, Any] | None] | None = None) -> SecretValue:
    """The referenced key's value; `cache` shares one read between refs to the same Secret."""
    if cache is not None and ref.name in cache:
        secret = cache[ref.name]
    else:
        secret = kube.get("Secret", namespace, ref.name)
        if cache is not None:
            cache[ref.name] = secret
    if secret is None:
        return SecretValue(secret_exists=False, value=None)
    value = decode(secret, ref.key)
    return SecretValue(secret_exists=True, value=value if value and value.strip() else None)
