#!/usr/bin/env bash
# Prints the path of a python3 that has the `jsonschema` package, which the
# OpenLineage test validates events with (cli/tests/data/openlineage/validate.py):
# the system python3 when it has it, else a virtualenv made here under
# ~/.cache/medallion-pytools (python3 and its venv module from apt when
# missing, jsonschema from PyPI). Messages go to stderr; stdout is the path.
set -euo pipefail

if command -v python3 >/dev/null 2>&1 && python3 -c 'import jsonschema, referencing' >/dev/null 2>&1; then
    command -v python3
    exit 0
fi
venv="${MEDALLION_PYTOOLS_DIR:-$HOME/.cache/medallion-pytools}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import jsonschema, referencing' >/dev/null 2>&1; then
    echo "$venv/bin/python"
    exit 0
fi
if [[ "$(id -u)" == 0 ]]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "pytools.sh: installing python3 and python3-venv (apt)" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
fi
echo "pytools.sh: making $venv with jsonschema (PyPI)" >&2
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check 'jsonschema>=4.18' >&2
echo "$venv/bin/python"
