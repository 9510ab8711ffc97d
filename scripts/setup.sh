#!/usr/bin/env bash
# Create .venv and install inversa with pinned dependencies (torch 2.13.0 CPU build; no CUDA downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned, so nothing later pulls a CUDA build
python -m pip install -q torch==2.13.0
# INVERSA_EXTRAS=test,ui adds the web page (inversa serve) and its browser test
python -m pip install -q -e ".[${INVERSA_EXTRAS:-test}]"
