#!/usr/bin/env bash
# The paper's questions on the sparse benchmark (#24): the bundled tiny_sparse_llava (16 layers, 256 vision tokens)
# on `sparse` (500 test questions per run; searches and rank stability on the `sparse_search` split). The README's
# "The sparse benchmark" numbers. Runs go to runs/sparse/, the table, intervals and plots to runs/sparse/report/.
#
#   recipes/sparse_tables.sh [more Hydra overrides...]        (or: make sparse-tables)
#
# Every method at 0.5 / 0.25 / 0.125 with its own defaults (FastV and random: k = 2, which on 16 layers reaches
# 0.125 only by keeping no vision token after layer 2; k = 1 keeps 1/15 of them, the paper's per-layer share for
# K = 2 on 32 layers). PyramidDrop's default stages (L/4, L/2, 3L/4) cannot go below 0.25 and SparseVLM's scaled
# layers below 0.152: runs/sparse_shallow/ has both with their first pruning layer moved to the start.
# Finished runs are skipped when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/sparse}
sweep() {  # sweep <out dir> <overrides...>
    local out=$1
    shift
    "$PY" -m vtr_bench -m model=tiny_sparse_llava benchmark=sparse run.out_dir="$out" run.show_progress=false \
        logger=none search.limit="${SEARCH_N:-100}" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")

sweep "$OUT" method=full
sweep "$OUT" run.mode=rank_stability rank_stability.samples=64
sweep "$OUT" method=fastv,random,downsample,psigmoid budget=0.5,0.25,0.125
sweep "$OUT" method=fastv,random ++method.k=1 budget=0.125
sweep "$OUT" method=pdrop budget=0.5,0.25
sweep "$OUT" method=sparsevlm budget=0.5,0.25
sweep "$OUT" method=sparsevlm,pdrop   # their official settings (SparseVLM preset 192, PyramidDrop lambda 0.5)
sweep "$OUT" method=gsearch
"$PY" -m vtr_bench.report --runs "$OUT" --out "$OUT/report"

sweep "${OUT}_shallow" method=sparsevlm ++method.layers=[0,3,7] budget=0.125
sweep "${OUT}_shallow" method=pdrop ++method.layers=[1,6,11] budget=0.125
"$PY" -m vtr_bench.report --runs "${OUT}_shallow" --out "${OUT}_shallow/report"

# The paper's 87.5%-reduction comparison, paired over the same 500 test questions (B - A: P-Sigmoid minus FastV)
psigmoid=$(dirname "$(ls "$OUT"/tiny_sparse_llava/psigmoid/b0.125-*/results.json | head -1)")
for k in 2 1; do
    fastv=$(dirname "$(grep -l '"k": '"$k" "$OUT"/tiny_sparse_llava/fastv/b0.125-*/results.json | head -1)")
    echo "P-Sigmoid vs FastV (k = $k) at 0.125:"
    "$PY" -m vtr_bench.compare "$fastv" "$psigmoid"
done
