#!/usr/bin/env bash
# The offline try-out: train one entry on the builtin tiny-sdxl base in a throwaway registry,
# compose one image from it, and print where the files are. Nothing is exported into your shell:
# the base and the registry are set for these commands only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # absolute, so the PATH entry holds from any folder
PATH="$VENV/bin:$PATH"

work="${TRY_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/unziplora-try.XXXXXX")}"
run() { UNZIPLORA_BASE_MODEL=tiny-sdxl UNZIPLORA_HOME="$work/registry" unzip "$@"; }

echo "== unzip train (tiny-sdxl, 64 px, 12 steps; registry: $work/registry)" >&2
id=$(run train examples/a_lighthouse_in_flat_poster_style.png --resolution 64 --steps 12 --preview-steps 2)
echo "== unzip compose --content $id --style $id \"at night\"" >&2
image=$(run compose --content "$id" --style "$id" "at night" --steps 3 --width 64 --height 64 -o "$work/images" -q)
preview=$(run show "$id" --json | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["preview"])')
moved=$(run show "$id" | sed -n 's/^moved: *//p')
cat >&2 <<MSG

entry    $id
preview  $preview
image    $image
moved    $moved

tiny-sdxl has random weights: every picture is the same noise, whatever the prompt, so the images
cannot show that training worked. The "moved" line can: how far training moved each LoRA from its
initialisation (unzip show prints it for every entry; more --steps move it further). The
commands, files and formats are the real ones. To look around in this registry:
    UNZIPLORA_HOME=$work/registry $VENV/bin/unzip list
Your own registry and settings were not touched.
MSG
