"""The one-line JSON result a job leaves for the operator (its container termination message)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Kubernetes truncates a termination message at 4096 bytes; keep the line well below that.
MAX_RESULT_BYTES = 3800


def encode_result(result: dict[str, Any]) -> str:
    """Serialize a result on one line, dropping the longest list fields until it fits."""
    line = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
    trimmed = dict(result)
    while len(line.encode()) > MAX_RESULT_BYTES:
        lists = [k for k, v in trimmed.items() if isinstance(v, list) and v]
        if not lists:
            trimmed = {k: trimmed[k] for k in ("kind", "outcome", "message") if k in trimmed}
            trimmed["truncated"] = True
            line = json.dumps(trimmed, separators=(",", ":"), sort_keys=True, default=str)
            break
        longest = max(lists, key=lambda k: len(json.dumps(trimmed[k], default=str)))
        trimmed[longest] = trimmed[longest][: len(trimmed[longest]) // 2]
        trimmed["truncated"] = True
        line = json.dumps(trimmed, separators=(",", ":"), sort_keys=True, default=str)
    return line


def write_result(path: Path | None, result: dict[str, Any]) -> str:
    """Write the result line to path (atomically when it does not exist yet) and return it."""
    line = encode_result(result)
    if path is None:
        return line
    if path.exists():  # in a pod the kubelet made it: a bind mount in root-owned /dev
        path.write_text(line + "\n")
        return line
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(line + "\n")
    tmp.replace(path)
    return line
