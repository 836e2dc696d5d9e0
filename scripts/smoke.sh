#!/usr/bin/env bash
# The CPU smoke run, as a DVC experiment: `bash scripts/smoke.sh` (6 min 48 s on 2 quiet cores
# with the mirror, fresh clone, 2026-11-24).
#
# It runs `dvc exp run --temp` with the overrides of scripts/smoke.yaml (through
# scripts/exp.sh), so the whole DAG runs through the same stage code with tiny budgets, in a
# temporary copy of the workspace: the committed dvc.lock, metrics/ and plots/ of the real
# run are never overwritten. See the experiment with `dvc exp show` and compare its plots
# with `dvc plots diff <exp>`.
#
# Data: the CIFAR-100 mirror when it is present (../shared/data, or $CIFAR100_ARCHIVE with
# $CIFAR100_MD5), else a synthetic archive in the official format.
set -euo pipefail
cd "$(dirname "$0")/.."
ALLOW_SYNTHETIC=1 exec bash scripts/exp.sh scripts/smoke.yaml --temp --name "smoke-$(date +%Y%m%d-%H%M%S)" "$@"
