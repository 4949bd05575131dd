#!/usr/bin/env bash
# One setting end to end: train the zoo, calibrate the radii, run the study, write the report, the
# results table and the README's tables. Every stage resumes where a killed run stopped.
#   bash reproductions/reproduce.sh vit_scratch        (run from the repository root)
# Stage wall times go to reproductions/<setting>/timing.tsv.
set -euo pipefail
setting=${1:?usage: reproduce.sh SETTING (a folder under reproductions/)}
dir=reproductions/$setting
run=runs/$setting
bin=${BIN:-.venv/bin}
[ -f "$dir/study.yaml" ] || { echo "no $dir/study.yaml" >&2; exit 2; }
export HF_HUB_OFFLINE=1
timing=$dir/timing.tsv
printf 'stage\tseconds\tfinished\n' > "$timing.new"
stage() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  printf '%s\t%d\t%s\n' "$name" $((SECONDS - start)) "$(date -u +%FT%TZ)" >> "$timing.new"
}
stage zoo "$bin/sharpness" zoo train "$dir/zoo.yaml" --out "$run/zoo" --no-progress
stage calibration "$bin/python" reproductions/calibrate.py "$dir" --zoo "$run/zoo"
stage study "$bin/sharpness" study run "$dir/study.yaml" --out "$run" --no-progress
stage report "$bin/sharpness" study report "$run" --out "$dir"
cp "$run/results.csv" "$dir/results.csv"
stage tables "$bin/python" reproductions/tables.py "$dir" --write
mv "$timing.new" "$timing"
cat "$timing"
