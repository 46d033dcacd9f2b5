#!/usr/bin/env bash
# Set up, lint, then run the test suite (the command CI runs). Extra arguments go to pytest, e.g. -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/ruff check .                 # lint first (pyproject.toml [tool.ruff]: a small rule set)
exec .venv/bin/python -m pytest "$@"
