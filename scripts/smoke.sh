#!/usr/bin/env bash
# The CPU smoke run, as a DVC experiment: `bash scripts/smoke.sh` (about 10 minutes on 2 cores).
#
# It runs `dvc exp run --temp` with the overrides of scripts/smoke.yaml, so the whole DAG
# runs through the same stage code with tiny budgets, in a temporary copy of the workspace:
# the committed dvc.lock, metrics/ and plots/ of the real run are never overwritten. See
# the experiment with `dvc exp show` and compare its plots with `dvc plots diff <exp>`.
#
# Data: the CIFAR-100 mirror when it is present (../shared/data, or $CIFAR100_ARCHIVE with
# $CIFAR100_MD5), else a synthetic archive in the official format.
set -euo pipefail
cd "$(dirname "$0")/.."

archive="${CIFAR100_ARCHIVE:-$(cd .. && pwd)/shared/data/cifar-100-python.tar.gz}"
md5="${CIFAR100_MD5:-489088aff4823e5bdf2d51ec904dbfdb}"
if [ ! -f "$archive" ]; then
  archive="$(mktemp -d)/cifar-100-python.tar.gz"
  md5=$(python -c "from pathlib import Path; from effnet.synthetic import write_synthetic_archive as w; print(w(Path('$archive'), train_per_class=20, test_per_class=10))")
  echo "no CIFAR-100 archive found: using synthetic data ($archive)"
fi

overrides=(-S "data.url=$archive" -S "data.md5=$md5")
while IFS= read -r line; do overrides+=(-S "$line"); done < <(python - <<'PY'
import yaml
for key, value in yaml.safe_load(open("scripts/smoke.yaml")).items():
    print(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
PY
)
exec dvc exp run --temp --name "smoke-$(date +%Y%m%d-%H%M%S)" "${overrides[@]}" "$@"
