#!/usr/bin/env bash
# Every method against every budget on both bundled tiny models (CPU, OMP_NUM_THREADS=1; time: see README):
# the README's "Results on the bundled tiny models". Runs go to runs/tiny/ and runs/tiny_shallow/, tables and plots
# to their report/ folders.
#
#   recipes/tiny_tables.sh [more Hydra overrides...]        (or: make tiny-tables)
#
# FastV and its random control prune after layer k=1: the lowest budget of a schedule that keeps layers < k whole
# is k/L, so k=2 on the 12-layer tiny models could not reach 0.1. SparseVLM's and PyramidDrop's default layers
# (2/6/15 of 32 scaled; L/4, L/2, 3L/4) cannot reach 0.125 on 12 layers either (SparseVLM's recycled cluster tokens
# lift its lowest budget to 0.196): runs/tiny_shallow/ has both again with their first pruning layer at the start
# (SparseVLM 0/2/5, PyramidDrop 1/4/8). Every method runs with its own defaults (position policy, rounding,
# recycling: conf/method/*.yaml). Searches score schedules on the
# first SEARCH_N samples of the shapes search split, never on the test split. Finished runs are skipped when run
# again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/tiny}
MODELS=${MODELS:-tiny_llava,tiny_internvl2}
sweep() {  # sweep <out dir> <overrides...>
    local out=$1
    shift
    "$PY" -m vtr_bench -m model="$MODELS" run.out_dir="$out" run.show_progress=false logger=none \
        search.limit="${SEARCH_N:-100}" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")

sweep "$OUT" method=full
sweep "$OUT" method=fastv,random ++method.k=1 budget=1.0,0.5,0.3,0.25,0.125,0.1
sweep "$OUT" method=psigmoid,sparsevlm,pdrop,downsample budget=0.3,0.125
sweep "$OUT" method=sparsevlm,pdrop   # their official settings (SparseVLM preset 192, PyramidDrop lambda 0.5)
# The 2026 baselines: pre-LLM (FasterVLM, VisionZip, VisPruner, DivPrune, CDPruner) and DART, which prunes after
# layer k: k=1 as FastV above (k=2 reaches 2/12 = 0.167 at the lowest)
sweep "$OUT" method=fastervlm,visionzip,vispruner,divprune,cdpruner budget=0.3,0.125
sweep "$OUT" method=dart ++method.k=1 budget=0.3,0.125
sweep "$OUT" method=gsearch
# G-Search's pass criterion against noise: the paper's (search means) and the paired lower bound, three tolerances
sweep "$OUT" method=gsearch ++method.criterion=mean,paired ++method.tolerance=0.01,0.02,0.05
sweep "$OUT" run.mode=rank_stability rank_stability.samples=32
"$PY" -m vtr_bench.report --runs "$OUT" --out "$OUT/report"
"$PY" recipes/gsearch_criteria.py "$OUT"   # does each G-Search keep its tolerance on the test split?

sweep "${OUT}_shallow" method=sparsevlm ++method.layers=[0,2,5] budget=0.3,0.125
sweep "${OUT}_shallow" method=pdrop ++method.layers=[1,4,8] budget=0.3,0.125
"$PY" -m vtr_bench.report --runs "${OUT}_shallow" --out "${OUT}_shallow/report"

# The documented deviations from the official defaults, at one budget: what each default changed
sweep "${OUT}_deviations" method=pdrop,downsample budget=0.3 positions=keep
sweep "${OUT}_deviations" method=sparsevlm budget=0.3 ++method.recycle=0,0.3 positions=keep,renumber
sweep "${OUT}_deviations" method=fastv,random ++method.k=1 budget=0.125 ++method.rounding=half_up
"$PY" -m vtr_bench.report --runs "${OUT}_deviations" --out "${OUT}_deviations/report"
