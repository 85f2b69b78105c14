#!/usr/bin/env bash
# Create the local virtualenv (.venv, or $VENV) with unziplora installed, once.
#
# PyTorch: when the Python that makes the venv already has torch, the venv reuses it
# (--system-site-packages). Otherwise torch $TORCH_VERSION is installed from $TORCH_INDEX, PyTorch's
# own CPU wheel index by default: plain `pip install torch` on PyPI is the CUDA build (gigabytes).
# Set TORCH_INDEX= (empty) to take torch from your pip configuration instead (a mirror, a local
# wheel folder), or TORCH_INDEX=https://download.pytorch.org/whl/cu128 for a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
EXTRAS="${EXTRAS:-test}"

if ! command -v "$PYTHON" >/dev/null; then
    echo "error: $PYTHON not found; install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)." >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: $("$PYTHON" --version 2>&1) is too old; unziplora needs Python 3.10 or newer (set PYTHON=python3.11)." >&2
    exit 1
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, unziplora' 2>/dev/null \
    && [ "$VENV/.installed" -nt pyproject.toml ]; then
    exit 0  # already set up and nothing changed since
fi

if [ ! -x "$VENV/bin/python" ]; then
    site=()
    if "$PYTHON" -c 'import torch' 2>/dev/null; then site=(--system-site-packages); fi
    if ! "$PYTHON" -m venv "${site[@]}" "$VENV"; then
        echo "error: could not create a virtualenv; on Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        rm -rf "$VENV"
        exit 1
    fi
fi
py="$VENV/bin/python"
log="$VENV/install.log"
quiet() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "error: '$*' failed; the log is $log" >&2; exit 1; }; }
: >"$log"
quiet "$py" -m pip install -q --upgrade pip
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "installing PyTorch $TORCH_VERSION${TORCH_INDEX:+ from $TORCH_INDEX}" >&2
    if [ -n "$TORCH_INDEX" ]; then
        quiet "$py" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
    else
        quiet "$py" -m pip install -q "torch==$TORCH_VERSION"
    fi
fi
echo "installing unziplora[$EXTRAS]" >&2
quiet "$py" -m pip install -q -e ".[$EXTRAS]"
touch "$VENV/.installed"
