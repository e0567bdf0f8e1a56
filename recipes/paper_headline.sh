#!/usr/bin/env bash
# The paper's headline comparison on one GPU with real weights: no reduction, FastV and P-Sigmoid at budget 0.125
# (87.5% of the vision tokens removed on average over the decoder layers) on the first N samples of GQA and POPE,
# for LLaVA-1.5-7B and InternVL2-8B (converted once from OpenGVLab's remote-code checkpoint, see README "Models").
#
#   recipes/paper_headline.sh [N=300] [more Hydra overrides...]
#
# Needs: a CUDA GPU with >= 24 GB, the hub reachable and a hub token (`huggingface-cli login`: the lmms-lab datasets
# are loaded with one); about 40 GB of disk for weights, the InternVL2-8B conversion and the datasets.
# P-Sigmoid searches its curve on the first SEARCH_N samples of VQAv2 val (never test data: the test tasks are GQA
# and POPE). Results: runs/headline/.../results.json per run, then runs/headline/report/report.md (table + plots).
# Finished runs are skipped when the script is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
shift $(( $# > 0 ? 1 : 0 ))
PY=${PY:-.venv/bin/python}
SEARCH_N=${SEARCH_N:-100}
OUT=${OUT:-runs/headline}

common=(hub.offline=false run.device=cuda run.out_dir="$OUT" run.show_progress=false
        benchmark=gqa benchmark.name=gqa_pope "benchmark.tasks=[gqa,pope]" benchmark.limit="$N"
        search.task=vqav2_val search.local=null search.limit="$SEARCH_N" search.metric=exact_match)

"$PY" -m vtr_bench -m model=llava15_7b,internvl2 method=full "${common[@]}" "$@"
"$PY" -m vtr_bench -m model=llava15_7b,internvl2 method=fastv,psigmoid budget=0.125 "${common[@]}" "$@"
"$PY" -m vtr_bench.report --runs "$OUT" --out "$OUT/report"
