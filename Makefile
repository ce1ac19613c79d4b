# The two commands of the README: `make demo` runs the product, `make test` runs every test.
# Both install what they need first (scripts/setup: system packages, the project, the control plane).
PYTHON ?= python3

.PHONY: setup demo test lint

setup:
	scripts/setup

demo: setup
	PYTHONPATH=devtools $(PYTHON) -m district_devtools.demo

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy
	$(PYTHON) -c 'from importlinter.cli import lint_imports_command as c; c()' --no-cache

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: setup
	$(PYTHON) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; exit $$rc
