"""The data PVC: owned by the District only when its deletionPolicy is Delete."""

from __future__ import annotations

from typing import Any

from district_operator import names
from district_operator.builders.common import metadata
from district_operator.model import District


def data_pvc(district: District) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [district.storage.access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": district.storage.size}},
    }
    if district.storage.storage_class_name:
        spec["storageClassName"] = district.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        # Without an owner reference the garbage collector leaves the volume alone when the
        # District goes (Retain); applying without it also drops an owner we set earlier.
        "metadata": metadata(district, names.data_pvc(district.name), names.COMPONENT_STORAGE,
                             owned=district.deletion_policy == "Delete"),
        "spec": spec,
    }
