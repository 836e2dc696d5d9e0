#!/usr/bin/env bash
# The small study, chain by chain: `bash scripts/small.sh [CHAIN ...]` (default: every chain of study.yaml's
# `small_study`, in order), then the closing stages (collect, cam, plots, report).
#
# Each chain is `bash scripts/chain.sh NAME -s download plan TRAIN EVALUATE` (one model: its training stage, then
# its evaluate stage; `-s` runs those stages alone, not the stages upstream of them that the small study does not
# run, such as the search). A chain whose record (metrics/chains/NAME.json) says it finished at a commit with the
# same code and params as now is skipped, so rerunning the script after an interruption goes on where it stopped; a chain stopped by
# EFFNET_DEADLINE resumes from its checkpoint. Exit status: 0, or the first failed chain's (75: resume later).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t chains < <(python - "$@" <<'PY'
import sys
from effnet.config import load_params
from effnet.study import small_study_chains
params = load_params("params.yaml", "scripts/small.yaml")
wanted = set(sys.argv[1:])
for chain in small_study_chains(params):
    if not wanted or chain.name in wanted:
        print(chain.name, *chain.stages)
PY
)
for line in "${chains[@]}"; do
  read -r name train evaluate <<< "$line"
  record="metrics/chains/$name.json"
  ran=$(python -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['commit'] if r['exit_status'] == 0 else '')" \
        "$record" 2> /dev/null || true)
  if [ -n "$ran" ] && git diff --quiet "$ran" HEAD -- effnet stages study.yaml dvc.yaml params.yaml scripts/small.yaml; then
    echo "chain $name: finished with this code ($record, commit ${ran:0:12}), skipped" >&2
    continue
  fi
  bash scripts/chain.sh "$name" -s download plan "$train" "$evaluate"
done
[ $# -gt 0 ] || bash scripts/chain.sh closing -s collect cam plots report
