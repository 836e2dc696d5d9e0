#!/usr/bin/env bash
# Prepare, on this machine, what a GPU session needs, so its minutes go to measuring:
# the CIFAR-100 mirror split into parts small enough to carry (64 MiB per device call).
# Then, with the device tool (README, "On the GPU machine"):
#   calls 1-3: carry [".devdata/cifar.part.0N"], command: mkdir -p /root/cifar && cp .devdata/cifar.part.* /root/cifar/
#   call 4+:   bash scripts/gpu_run.sh bench     |   bash scripts/gpu_run.sh train efficientnet_b0 resnet50
# The library needs nothing that the GPU machine lacks (no dvc, dvclive, fvcore or grad-cam).
set -euo pipefail
cd "$(dirname "$0")/.."
archive="${1:-../shared/data/cifar-100-python.tar.gz}"
grep -qx '/.devdata/' .git/info/exclude 2>/dev/null || echo '/.devdata/' >> .git/info/exclude
rm -rf .devdata && mkdir -p .devdata
split -b 60M -d "$archive" .devdata/cifar.part.
ls -l .devdata
md5sum "$archive"
