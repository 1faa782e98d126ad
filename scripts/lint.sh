#!/usr/bin/env bash
# The gate before the tests: ruff (pyflakes, pycodestyle, isort, bugbear), mypy on the package (no
# untyped definitions), vulture (dead code). Settings in pyproject.toml. Expects the virtualenv that
# scripts/setup.sh makes (the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "lint: ruff" >&2
.venv/bin/ruff check virt_exporter tests bench scripts
echo "lint: mypy" >&2
.venv/bin/mypy
echo "lint: vulture" >&2
.venv/bin/vulture
