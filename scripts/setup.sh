#!/usr/bin/env bash
# Create .venv and install gali-harness with its test/demo extras.
# torch is installed first and only if missing: TORCH_SPEC (default torch==2.13.0) and optional TORCH_INDEX_URL
# (e.g. https://download.pytorch.org/whl/cpu or .../cu124) choose the build. Nothing here needs the HF hub.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing $TORCH_SPEC ${TORCH_INDEX_URL:+from $TORCH_INDEX_URL}"
  "${PIP[@]}" install "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
"${PIP[@]}" install -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import torch, transformers, harness; print('gali-harness', harness.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
