"""What `pip wheel .` ships: both planes, their contract and the plugin; no development tooling."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_product_and_no_dev_tooling(tmp_path: Path) -> None:
    # Build from a copy of the tracked files, as a clean clone would, leaving no build/ here.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    source = tmp_path / "src"
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"),
                             "."], cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("district_sftp-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in files if not name.startswith("district_sftp-")}
    assert packages == {"district_contract", "district_operator", "kubectl_district", "sftpd"}
    for marker in ("localcluster", "kubelet", "demo", "devtools", "postgres.py", "conftest"):
        assert not [f for f in files if marker in f], f"{marker} is in the wheel"
    assert "district_contract/results.py" in files
    assert "kubectl_district/cli.py" in files
