#!/usr/bin/env bash
# A whole session with unziplora on the builtin tiny-sdxl base, in a throwaway registry:
# train -> list -> show -> compose -> restyle -> export -> rm. Runs offline in about a minute.
# tiny-sdxl has random weights, so every image is noise; the commands are the real ones.
#
#   bash examples/walkthrough.sh            # keeps its work folder and prints where it is
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/unziplora-walkthrough.XXXXXX")"
export UNZIPLORA_HOME="$work/registry"        # a fresh registry, not yours
export UNZIPLORA_BASE_MODEL=tiny-sdxl          # the offline toy base
fast=(--resolution 64 --steps 6 --preview-steps 1)
gen=(--steps 2 --width 64 --height 64)

echo "== train: one image in, one entry out (subject and style read from the file name)"
id=$(unzip train "$here/a_lighthouse_in_flat_poster_style.png" "${fast[@]}" -q)
echo "entry: $id"

echo "== train a second entry with explicit words"
python "$here/make_input.py" "$work/rose.png" >/dev/null
id2=$(unzip train "$work/rose.png" --subject rose --style "pop art" "${fast[@]}" -q)

echo "== list"
unzip list
unzip list --json | python -c 'import json, sys; print(len(json.load(sys.stdin)), "entries as JSON")'

echo "== show, verifying every payload hash"
unzip show "$id" --verify

echo "== compose: the lighthouse on a beach, in its own style (prompt separation + merges)"
unzip compose --content "$id" --style "$id" "on a beach" "${gen[@]}" -o "$work/out/beach"

echo "== compose across entries: lighthouse content, rose's pop-art style"
unzip compose --content "$id" --style "$id2" "at night" "${gen[@]}" -n 2 --sheet -o "$work/out/mix"

echo "== restyle: a new subject in the lighthouse's style, and an existing picture"
unzip restyle --style "$id" --subject "a sailing boat" "${gen[@]}" -o "$work/out/boat"
unzip restyle --style "$id" --subject "a rose" --image "$work/rose.png" --strength 0.6 "${gen[@]}" -o "$work/out/img2img"

echo "== export: the style for Kohya/A1111/ComfyUI, both parts for diffusers"
unzip export "$id" --format kohya --part style -o "$work/export/lighthouse_style.safetensors"
unzip export "$id" --format diffusers --part both -o "$work/export/lighthouse_both"

echo "== rm"
unzip rm "$id2" --yes
unzip list -q

echo "walkthrough finished; files are in $work"
