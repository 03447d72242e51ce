#!/usr/bin/env bash
# Write requirements/lock.txt from the packages installed in a virtualenv (default .venv-latest) whose tests passed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-latest}
out=requirements/lock.txt
{
  sed -n '1,/^# `make test-latest`/p' "$out"
  "$VENV/bin/python" -m pip list --format=freeze --exclude-editable | grep -v -i -E '^(torch|pip|setuptools|gali-harness)==' | sort -f
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
