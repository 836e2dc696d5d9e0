#!/usr/bin/env bash
# Run on the GPU machine (bare: torch and torchvision, no dvc): join the carried CIFAR-100
# parts, prepare the arrays with the download stage, then measure or train.
#
#   bash scripts/gpu_run.sh bench                        # loader and trainer benchmarks, B0-B7 and baselines
#   bash scripts/gpu_run.sh train efficientnet_b0 ...    # train (resumable across calls), evaluate
#
# Budgets come from params.yaml with the overrides in $GPU_OVERRIDES (dotted key=value,
# space-separated), e.g. GPU_OVERRIDES="train.epochs=30". Results go to $OUT (the device
# tool's folder) when it is set: metrics, DVCLive curves, logs; weights stay on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS="${CIFAR_PARTS:-/root/cifar}"
ARCHIVE="$PARTS/cifar-100-python.tar.gz"
MD5=489088aff4823e5bdf2d51ec904dbfdb
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

[ -f "$ARCHIVE" ] || cat "$PARTS"/cifar.part.* > "$ARCHIVE"
echo "$MD5  $ARCHIVE" | md5sum -c -

python3 - "$ARCHIVE" "$MD5" ${GPU_OVERRIDES:-} <<'PY'
import os, sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["data"].update(url=sys.argv[1], md5=sys.argv[2])
if not os.path.exists("metrics/search.json"):  # B1-B7 before any search: the paper's table (B0 is the same)
    params["network"]["efficientnet_scaling"] = "published"
for override in sys.argv[3:]:
    key, value = override.split("=", 1)
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = yaml.safe_load(value)
yaml.safe_dump(params, open("params-gpu.yaml", "w"), sort_keys=False)
PY
[ -f data/cifar100/meta.json ] || python3 stages/download.py --params params-gpu.yaml
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || uname -m; } | tee "$OUT/hardware.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/hardware.txt"

case "${1:-}" in
  bench)
    python3 benchmarks/bench_loader.py --data data/cifar100 --archive "$ARCHIVE" --device cuda 2>&1 | tee "$OUT/bench_loader.txt"
    python3 benchmarks/bench_train.py --data data/cifar100 --peak-tflops 989 2>&1 | tee "$OUT/bench_train.txt"
    ;;
  train)
    shift
    nproc=$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')
    for model in "$@"; do
      torchrun --standalone --nproc-per-node="$nproc" stages/train.py --model "$model" --params params-gpu.yaml \
        2>&1 | tee -a "$OUT/train_$model.log"
      mkdir -p "$OUT/dvclive_$model" && cp -r "dvclive/$model/." "$OUT/dvclive_$model/"
      python3 - "$model" "$OUT" <<'PY'
import json, sys, torch
model, out = sys.argv[1:]
w = torch.load(f"models/{model}/model.pt", map_location="cpu", weights_only=True)
json.dump({k: w[k] for k in ("spec", "metrics", "history", "train_time_s", "train_config")}, open(f"{out}/train_{model}.json", "w"), indent=2)
PY
    done
    ;;
  *) echo "usage: $0 bench | train MODEL..." >&2; exit 2 ;;
esac
