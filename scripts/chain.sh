#!/usr/bin/env bash
# One chain of the small study: `bash scripts/chain.sh NAME [dvc exp run options] STAGE [STAGE ...]`, e.g.
#   bash scripts/chain.sh scale-b0 scale_b0 evaluate@scaling/baseline
#
# Runs `bash scripts/exp.sh scripts/small.yaml STAGE ...` (an ordinary `dvc exp run` of the small profile in this
# workspace; DVC runs what the stages need first) and writes metrics/chains/NAME.json: the code commit it ran, the
# stages, the clock's estimate of them on this machine (python -m effnet.clock --stages, timed just before), the
# start, end and wall seconds, the exit status, and the load average before and after. A chain stopped by
# EFFNET_DEADLINE exits 75 with its checkpoints kept; the same command resumes it, and the record then keeps the first
# part's estimate and start and sums the parts' wall seconds (part_wall_s). Detached, as the small study runs:
#   EFFNET_DEADLINE=$(date -d '+2 hours' +%s) setsid nohup bash scripts/chain.sh b0 scale_b0 ... > chain.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  echo "usage: bash scripts/chain.sh NAME STAGE [STAGE ...]  (stages as 'dvc stage list' names them)" >&2
  exit 2
fi
name="$1"; shift
profile="${SMALL_PROFILE:-scripts/small.yaml}"
mkdir -p metrics/chains
record="metrics/chains/$name.json"
training=()  # the training stages of the arguments (options such as -s/--single-item go to dvc exp run)
for stage in "$@"; do
  case "$stage" in -*|evaluate*|collect|cam|cam_maps*|plots|report|download|plan) ;; *) training+=("$stage") ;; esac
done
estimate=null
if [ ${#training[@]} -gt 0 ]; then
  estimate=$(python -m effnet.clock --overrides "$profile" --stages "${training[@]}")
fi
commit=$(git rev-parse HEAD)
dirty=$(git status --porcelain --untracked-files=no -- effnet stages study.yaml dvc.yaml | wc -l)
load_before=$(cut -d' ' -f1 /proc/loadavg)
# The processor: chains of one study may run on different machines, and the clock's estimate is of this one.
cpu=$(python -c "import os; from effnet.report import cpu_name; from effnet.train import cpu_has_bf16; \
print(f'{cpu_name()} ({os.cpu_count()} cores' + (', native bf16)' if cpu_has_bf16() else ', no native bf16)'))")
started=$(date -u +%Y-%m-%dT%H:%M:%SZ); start_s=$(date +%s)
echo "chain $name: ${*} at commit ${commit:0:12}; the clock's estimate ${estimate} s" >&2
lock_state() {  # the dvc.lock entries of this chain's stages: unchanged after the run means DVC trained nothing
  python - "$@" <<'PY'
import hashlib, sys, yaml
try:
    stages = (yaml.safe_load(open("dvc.lock")) or {}).get("stages", {})
except OSError:
    stages = {}
print(hashlib.md5(repr([stages.get(s) for s in sys.argv[1:] if not s.startswith("-")]).encode()).hexdigest())
PY
}
before=$(lock_state "$@")
status=0
bash scripts/exp.sh "$profile" "$@" || status=$?
end_s=$(date +%s)
if [ "$status" -eq 0 ] && [ "$(lock_state "$@")" = "$before" ] && [ -f "$record" ]; then
  echo "chain $name: every stage was up to date (DVC ran nothing); $record kept" >&2
  exit 0
fi
python - "$record" <<PY
import json, sys
record = {"chain": "$name", "stages": [s for s in "${*}".split() if not s.startswith("-")], "commit": "$commit",
          "code_changed_since_commit": $dirty > 0, "profile": "$profile", "cpu": "$cpu", "estimate_s": $estimate, "started": "$started",
          "finished": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "wall_s": $end_s - $start_s, "exit_status": $status,
          "load_before": $load_before, "load_after": $(cut -d' ' -f1 /proc/loadavg)}
try:  # a chain resumed after its deadline (exit 75) at the same commit: one record, its parts' times summed
    before = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    before = {}
same = all(before.get(k) == record[k] for k in ("stages", "commit", "code_changed_since_commit", "profile"))
if before.get("exit_status") == 75 and same:
    parts = before.get("part_wall_s", [before["wall_s"]]) + [record["wall_s"]]
    record.update(estimate_s=before["estimate_s"], started=before["started"], load_before=before["load_before"],
                  wall_s=sum(parts), part_wall_s=parts)
json.dump(record, open(sys.argv[1], "w"), indent=2)
open(sys.argv[1], "a").write("\n")
PY
echo "chain $name: exit $status after $((end_s - start_s)) s (estimate ${estimate} s): $record" >&2
exit "$status"
