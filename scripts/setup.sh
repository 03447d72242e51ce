#!/usr/bin/env bash
# Create a virtualenv and install gali-harness with its dev extras, at the tested versions.
#
#   VENV          where (default .venv)
#   LOCK          constraints file (default requirements/lock.txt: the versions the test suite passed with);
#                 LOCK=none installs the newest releases within pyproject.toml's ranges (what `make test-latest` tests)
#   TORCH_SPEC    torch requirement installed first, only if torch is missing (default torch==2.13.0);
#   TORCH_INDEX_URL  optional index for another torch build (e.g. https://download.pytorch.org/whl/cpu or .../cu126)
#   EXTRAS        pip extras (default dev)
# Nothing here needs the Hugging Face hub.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}
LOCK=${LOCK:-requirements/lock.txt}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: gali-harness needs Python >= 3.11 (found $("$PYTHON" -V 2>&1)). Fix: PYTHON=python3.11 make setup" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing $TORCH_SPEC ${TORCH_INDEX_URL:+from $TORCH_INDEX_URL}"
  "${PIP[@]}" install "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
if [ "$LOCK" = "none" ]; then
  echo "installing the newest releases (no lock; torch stays as installed)"
  deps=$("$VENV/bin/python" - "$EXTRAS" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1].split(","):
    reqs += project["optional-dependencies"].get(extra, [])
names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in reqs}
print(" ".join(sorted(n for n in names if n != "torch")))
PY
)
  # shellcheck disable=SC2086  # one word per package name
  "${PIP[@]}" install -U -e ".[$EXTRAS]" $deps
else
  echo "installing the locked versions ($LOCK)"
  "${PIP[@]}" install -c "$LOCK" -e ".[$EXTRAS]"
fi
"$VENV/bin/python" -c "import torch, transformers, harness; print('gali-harness', harness.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
