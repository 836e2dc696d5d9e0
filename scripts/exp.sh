#!/usr/bin/env bash
# One DVC experiment with the overrides of a YAML file: `bash scripts/exp.sh OVERRIDES.yaml [dvc exp run options]`.
#
# Every `key: value` line of OVERRIDES.yaml becomes `dvc exp run -S key=value`, so the run goes
# through the same stage code as `dvc repro`, and `dvc exp show` lists it. Used by
# scripts/smoke.sh (scripts/smoke.yaml, with --temp) and by the small study's chains
# (scripts/chain.sh with scripts/small.yaml, in the workspace).
#
# Exit status: 0, 75 when a trainer stopped at its time budget (rerun to resume), else dvc's.
#
# Data: the CIFAR-100 mirror (../shared/data, or $CIFAR100_ARCHIVE with $CIFAR100_MD5). Where it
# is absent the run stops, unless ALLOW_SYNTHETIC=1, which uses a synthetic archive in the
# official format instead (the smoke run does).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: bash scripts/exp.sh OVERRIDES.yaml [dvc exp run options]  (got: ${1:-nothing})" >&2
  exit 2
fi
overrides_file="$1"; shift

archive="${CIFAR100_ARCHIVE:-$(cd .. && pwd)/shared/data/cifar-100-python.tar.gz}"
md5="${CIFAR100_MD5:-489088aff4823e5bdf2d51ec904dbfdb}"
if [ ! -f "$archive" ]; then
  if [ "${ALLOW_SYNTHETIC:-0}" != 1 ]; then
    echo "error: no CIFAR-100 archive at $archive: set CIFAR100_ARCHIVE and CIFAR100_MD5, or ALLOW_SYNTHETIC=1" >&2
    exit 2
  fi
  archive="$(mktemp -d)/cifar-100-python.tar.gz"
  md5=$(python -c "from pathlib import Path; from effnet.synthetic import write_synthetic_archive as w; print(w(Path('$archive'), train_per_class=20, test_per_class=10))")
  echo "no CIFAR-100 archive found: using synthetic data ($archive)"
fi

overrides=(-S "data.url=$archive" -S "data.md5=$md5")
while IFS= read -r line; do overrides+=(-S "$line"); done < <(python - "$overrides_file" <<'PY'
import sys
import yaml
for key, value in yaml.safe_load(open(sys.argv[1])).items():
    print(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
PY
)
# DVC reports any failed stage as its own failure (255); a trainer stopped by its time budget
# (EFFNET_TIME_BUDGET_S / EFFNET_DEADLINE) also writes a line to $EFFNET_RESUME_FILE, so this
# script exits 75 ("resume me: run the same command again") for that, and DVC's status otherwise.
resume_file="$(mktemp)"
trap 'rm -f "$resume_file"' EXIT
status=0
EFFNET_RESUME_FILE="$resume_file" dvc exp run "${overrides[@]}" "$@" || status=$?
if [ "$status" -ne 0 ] && [ -s "$resume_file" ]; then
  echo "stopped by the time budget; run the same command again to resume:" >&2
  sed 's/^/  /' "$resume_file" >&2
  exit 75
fi
exit "$status"
