#!/usr/bin/env bash
# The small study, chain by chain: `bash scripts/small.sh [CHAIN ...]` (default: every chain of study.yaml's
# `small_study`, in order), then the closing stages (collect, cam, plots, report).
#
# Each chain is `bash scripts/chain.sh NAME -s download plan TRAIN EVALUATE [CAM_MAPS]` (one model: its training
# stage, its evaluate stage and, for a model of the scaling study, its Grad-CAM maps, drawn while its weights
# exist: they stay in this machine's DVC cache, and the closing `cam` stage reads only the maps; `-s` runs those
# stages alone, not the stages upstream of them that the small study does not
# run, such as the search). DVC skips the stages of a finished chain whose code and params have not changed since
# (dvc.lock), and its record (metrics/chains/NAME.json) is kept, so rerunning the script after an interruption goes
# on where it stopped; a chain stopped by EFFNET_DEADLINE resumes from its checkpoint. Exit status: 0, or the
# first failed chain's (75: resume later).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${SMALL_PROFILE:-scripts/small.yaml}"  # chain.sh reads the same variable
mapfile -t chains < <(python - "$profile" "$@" <<'PY'
import sys
from effnet.cam import maps_stage
from effnet.config import load_params
from effnet.study import small_study_chains
params = load_params("params.yaml", sys.argv[1])
wanted = set(sys.argv[2:])
for chain in small_study_chains(params):
    if not wanted or chain.name in wanted:
        print(chain.name, *chain.stages, *filter(None, [maps_stage(chain.model)]))
PY
)
for line in "${chains[@]}"; do
  read -r name stages <<< "$line"
  # shellcheck disable=SC2086  # the stage names hold no spaces
  bash scripts/chain.sh "$name" -s download plan $stages
done
[ $# -gt 0 ] || bash scripts/chain.sh closing -s collect cam plots report
