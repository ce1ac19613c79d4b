"""The import rules between the rooms (pyproject's [tool.importlinter]) hold, and can fail."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Where each root package lives in the checkout.
PACKAGES = {"district_contract": "contract", "district_operator": "operator",
            "kubectl_district": "operator", "sftpd": ".", "district_devtools": "devtools"}


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the packages of `tree`, laid out like the checkout."""
    path = os.pathsep.join(str(tree / folder) for folder in dict.fromkeys(PACKAGES.values()))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command"
                           " as c; c()", "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def copy_checkout(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copy2(REPO / "pyproject.toml", target / "pyproject.toml")
    for package, folder in PACKAGES.items():
        shutil.copytree(REPO / folder / package, target / folder / package, ignore=ignore)
    return target


def test_the_checkout_keeps_every_import_rule() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "planted", "broken"), [
    ("sftpd/tree.py", "import district_operator.names", "data plane never imports"),
    ("operator/district_operator/status.py", "from district_operator import api",
     "never reach the API client"),
    ("operator/kubectl_district/output.py", "import sftpd.uploads", "nothing from the data plane"),
    ("contract/district_contract/layout.py", "import yaml", "imports nothing of the project"),
    ("operator/district_operator/model.py", "import district_devtools.ports",
     "nothing from the data plane"),
])
def test_a_planted_violation_breaks_the_rules(tmp_path: Path, module: str, planted: str,
                                              broken: str) -> None:
    tree = copy_checkout(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
    broken_section = result.stdout.split("Broken contracts")[-1]
    assert broken in " ".join(broken_section.split())  # the report wraps long names


def test_the_contract_uses_the_standard_library_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "district_contract"}
    for source in (REPO / "contract" / "district_contract").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{source.name} imports {roots}"
