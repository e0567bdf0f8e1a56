#!/usr/bin/env bash
# Every method against every budget on both bundled tiny models (CPU, about half an hour on 2 cores): the README's
# "Results on the bundled tiny models". Runs go to runs/tiny/, the tables and plots to runs/tiny/report/.
#
#   recipes/tiny_tables.sh [more Hydra overrides...]        (or: make tiny-tables)
#
# FastV and its random control prune after layer k=1: the lowest budget of a schedule that keeps layers < k whole
# is k/L, so k=2 on the 12-layer tiny models could not reach 0.1. Searches score schedules on the first SEARCH_N
# samples of the shapes search split, never on the test split. Finished runs are skipped when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/tiny}
MODELS=${MODELS:-tiny_llava,tiny_internvl2}
common=(run.out_dir="$OUT" run.show_progress=false logger=none search.limit="${SEARCH_N:-100}" "$@")

"$PY" -m vtr_bench -m model="$MODELS" method=full "${common[@]}"
"$PY" -m vtr_bench -m model="$MODELS" method=fastv,random ++method.k=1 budget=1.0,0.5,0.3,0.25,0.125,0.1 "${common[@]}"
"$PY" -m vtr_bench -m model="$MODELS" method=psigmoid,sparsevlm,pdrop,downsample budget=0.3,0.125 "${common[@]}"
"$PY" -m vtr_bench -m model="$MODELS" method=gsearch "${common[@]}"
"$PY" -m vtr_bench -m model="$MODELS" run.mode=rank_stability rank_stability.samples=32 "${common[@]}"
"$PY" -m vtr_bench.report --runs "$OUT" --out "$OUT/report"
