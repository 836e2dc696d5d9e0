#!/usr/bin/env bash
# The whole GPU recipe on this CPU, under the GPU machine's versions (not in CI; ~5-10 minutes on 2 cores):
#
#   CIFAR100_ARCHIVE=/path/to/cifar-100-python.tar.gz bash scripts/gpu_dryrun.sh [WORKDIR]
#   bash scripts/gpu_dryrun.sh --lease [WORKDIR]     # the 15-minute lease's three calls (docs/lease.md)
#
# --lease: after step 1, the plan of docs/lease.md instead of steps 2-6, against an emulated lease of
# LEASE_S (default 1200: the CPU's epochs are slow; docs/lease.md says what its runs found) seconds of device
# time: a start delay (START_S, default 20) before the first call, the carry limit (tree + carried path
# <= 64 MiB, checked per call), the machine gone when a call follows the last one more than RELEASE_S (30)
# after it returned (the setsid job with it), each call's timeout_s from
# scripts/lease.py with the budget left, a call cut by the end of the lease bringing nothing back, and a lease
# that may end mid-training (LEASE_SET: the CPU profile, 20 images a class by default, with which this CPU
# fits no epoch; docs/lease.md gives a LEASE_SET that trains both models). Needs the carried parts
# (`python scripts/carry.py encode`, .carry/data/part1, part2).
# Then pack-lease's files (at most 8 of 16 MiB) unpacked into a scratch clone, the benchmark in
# benchmarks/bench_lease.json there, and `python -m effnet.clock --gpu` read from it; when a model was
# evaluated inside the lease, the clone committed and read back as in step 4 (dvc metrics show must read
# each unpacked model's metrics, then dvc plots show and the report).
#
# 1. A Python 3.12 virtual environment with torch 2.11.0 and torchvision 0.26.0 from PyPI and only packages
#    the GPU image has (numpy, pyyaml, tqdm, pandas, matplotlib, pillow): no dvc, dvclive, fvcore or
#    grad-cam (checked). Made once, in $GPU_DRYRUN_VENV (default ~/.cache/effnet-gpu-dryrun/venv312).
# 2. Each device call emulated: the working tree as the device tool sends it (tracked plus untracked,
#    unignored files) plus the call's carried path, copied into a fresh "device" directory that persists
#    between calls as a warm machine does; $OUT emptied per call; `timeout -s KILL` at the call's timeout_s.
# 3. The calls of a window: three carries (parts checked, then joined atomically and the arrays prepared),
#    a training call whose trainer stops itself at its time budget (exit 75), a call SIGKILLed from outside
#    mid-epoch (its archive is lost, its checkpoint is not), the call that finishes, and a call that finds
#    everything done. Then the same window uninterrupted on a second fresh device: the metrics must match.
# 4. The archives unpacked, in order, into a scratch clone of this repository and committed on a scratch
#    branch there, as a GPU session would; then `dvc metrics show`, `dvc plots show` and the report stage
#    run on that commit with the project's own environment (which has dvc), on a machine without weights.
set -euo pipefail
MODE=window
if [ "${1:-}" = --lease ]; then MODE=lease; shift; fi
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
VENV=${GPU_DRYRUN_VENV:-$HOME/.cache/effnet-gpu-dryrun/venv312}
ARCHIVE=${CIFAR100_ARCHIVE:-$REPO/../shared/data/cifar-100-python.tar.gz}
WORK=${1:-$(mktemp -d /tmp/gpu-dryrun-XXXXXX)}
WINDOW=scripts/gpu_dryrun.yaml
HERE_PYTHON=${HERE_PYTHON:-python}   # the project's environment (dvc, dvclive) for the steps "here"
mkdir -p "$WORK"
say() { printf '\n=== %s\n' "$*"; }
[ "$MODE" = lease ] || [ -f "$ARCHIVE" ] || { echo "error: no CIFAR-100 archive at $ARCHIVE; set CIFAR100_ARCHIVE" >&2; exit 2; }

say "1. the GPU machine's Python: $VENV"
if [ ! -x "$VENV/bin/python3" ]; then
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python3" -m pip install -q --upgrade pip
  "$VENV/bin/python3" -m pip install -q torch==2.11.0 torchvision==0.26.0 numpy pyyaml tqdm pandas matplotlib pillow
fi
(cd / && "$VENV/bin/python3" - <<'PY'
import importlib.util, platform, torch, torchvision
assert platform.python_version().startswith("3.12"), platform.python_version()
assert torch.__version__.startswith("2.11.0") and torchvision.__version__.startswith("0.26.0"), torch.__version__
extra = [m for m in ("dvc", "dvclive", "fvcore", "pytorch_grad_cam") if importlib.util.find_spec(m)]
assert not extra, f"the GPU machine has none of {extra}"
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "; no dvc, dvclive, fvcore, grad-cam")
PY
)  # from / : the repository's dvclive/ folder would pass for a namespace package

# send DEVICE [CARRY]: the tree as the tool sends it, plus one carried path (replacing it there)
send() {
  local device=$1 carry=${2:-}
  mkdir -p "$device"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$device"
  if [ -n "$carry" ]; then rm -rf "${device:?}/$carry"; mkdir -p "$device/$(dirname "$carry")"; cp -r "$carry" "$device/$carry"; fi
}
# read_back SCRATCH WHAT: commit what was unpacked into the scratch clone on a scratch branch, as a GPU session
# would, then `dvc metrics show`, `dvc plots show` and the report on that commit with the project's own
# environment (which has dvc), on a machine without weights
read_back() {
  local scratch=$1 what=$2 unpacked
  git -C "$scratch" checkout -q -b gpu-dryrun
  git -C "$scratch" add -A
  git -C "$scratch" -c user.name=dryrun -c user.email=dryrun@localhost commit -q -m "GPU dry run: $what (CPU emulation)"
  git -C "$scratch" show --stat --format='%h %s' HEAD | tail -n 25
  # the models whose metrics this commit brought (the clone holds the committed small study's as well)
  unpacked=$(git -C "$scratch" diff --name-only HEAD~1 HEAD -- 'metrics/models/*.json')
  [ -n "$unpacked" ] || { echo "error: the unpacked commit brings no metrics/models/*.json" >&2; exit 1; }
  (cd "$scratch" && dvc metrics show --json | "$HERE_PYTHON" -c "
import json, sys
unpacked, shown = set(sys.argv[1].split()), set()
for rev in json.load(sys.stdin).values():
    for path, entry in rev['data'].items():
        if path in unpacked and 'data' in entry:
            d = entry['data']
            shown.add(path)
            print(f'dvc metrics show: {path}: test/top1 {d[\"test/top1\"]}, device {d[\"device\"]}, epochs {d[\"epochs\"]}')
assert shown == unpacked, f'dvc metrics show does not read {sorted(unpacked - shown)}'
" "$unpacked")
  (cd "$scratch" && dvc plots show --out "$WORK/dvc_plots" >/dev/null && echo "dvc plots show: $WORK/dvc_plots/index.html")
  (cd "$scratch" && "$HERE_PYTHON" stages/report.py --out "$WORK/REPORT.md" && echo "report: $(grep -c . "$WORK/REPORT.md") lines")
}
# ---------------------------------------------------------------------------------------------------------
# --lease: the three calls of docs/lease.md on an emulated lease
# ---------------------------------------------------------------------------------------------------------
if [ "$MODE" = lease ]; then
  LEASE_S=${LEASE_S:-1200}; START_S=${START_S:-20}; RELEASE_S=${RELEASE_S:-30}; LIMIT_MIB=64
  LEASE_SET=${LEASE_SET:-train.train_per_class=20}
  DEV=$WORK/lease-device; LDIR=$DEV.root/lease; STORE=$DEV.root/carry-data
  for part in .carry/data/part1 .carry/data/part2; do
    [ -d "$part" ] || { echo "error: no $part; run: python scripts/carry.py encode" >&2; exit 2; }
  done
  rm -rf "$DEV" "$DEV.root" && mkdir -p "$DEV" "$LDIR" "$STORE"
  LEASE_START=$(date +%s); RETURNED=""; JOBPID=""
  left() { echo $(( LEASE_S - ($(date +%s) - LEASE_START) )); }
  # lease_call NAME CARRY PACK_S COMMAND(with @JOB@/@WORK@ placeholders): one device call under the plan's rules
  lease_call() {
    local name=$1 carry=$2 pack=$3 command=$4 cold="" budget fig timeout job work bytes rc=0 cut
    if [ -n "$RETURNED" ] && [ $(( $(date +%s) - RETURNED )) -gt "$RELEASE_S" ]; then
      echo "call $name: more than ${RELEASE_S} s after the last call returned: the machine is gone, and its job"
      [ -n "$JOBPID" ] && kill -- -"$JOBPID" 2>/dev/null || true
      rm -rf "$DEV" "$DEV.root" && mkdir -p "$DEV" "$LDIR" "$STORE"; RETURNED=""
    fi
    [ -z "$RETURNED" ] && cold=--cold
    budget=$(left)
    # the figures are computed here, as in a real lease (the device's Python has no installed effnet)
    fig=$("$HERE_PYTHON" scripts/lease.py --budget-left "$budget" $cold --pack-s "$pack" --start-s "$START_S") \
      || { echo "call $name: refused by scripts/lease.py (budget $budget s)"; return 3; }
    timeout=$(echo "$fig" | "$VENV/bin/python3" -c "import json,sys; print(json.load(sys.stdin)['timeout_s'])")
    job=$(echo "$fig" | "$VENV/bin/python3" -c "import json,sys; print(json.load(sys.stdin)['job_work_s'])")
    work=$(echo "$fig" | "$VENV/bin/python3" -c "import json,sys; print(json.load(sys.stdin)['work_s'])")
    [ -n "$cold" ] && { echo "call $name: a machine starts (${START_S} s)"; sleep "$START_S"; }
    send "$DEV" "$carry"
    bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null;
              { [ -z "$carry" ] || find "$carry" -type f -exec stat -c %s {} +; }) | awk '{s+=$1} END {print s+0}')
    [ "$bytes" -le $(( LIMIT_MIB * 1048576 )) ] || { echo "error: call $name carries $bytes bytes, over ${LIMIT_MIB} MiB" >&2; exit 1; }
    command=${command//@JOB@/$job}; command=${command//@WORK@/$work}
    cut=$(left)
    [ "$cut" -ge 1 ] || { echo "call $name: the lease is over: no call"; return 0; }
    [ "$cut" -lt "$timeout" ] && timeout=$cut   # the lease's end cuts the call
    rm -rf "$WORK/out/$name" && mkdir -p "$WORK/out/$name"
    say "call $name: budget $budget s, timeout_s $timeout, $(( bytes / 1048576 )) MiB carried: $command"
    (cd "$DEV" && PATH="$VENV/bin:$PATH" OUT="$WORK/out/$name" EFFNET_CARRY_STORE="$STORE" EFFNET_LEASE_DIR="$LDIR" \
       OMP_NUM_THREADS=1 timeout -s KILL "$timeout" bash -c "$command") > "$WORK/out/$name.log" 2>&1 || rc=$?
    if [ "$(left)" -le 0 ]; then echo "call $name: cut by the end of the lease: nothing comes back"; rm -rf "$WORK/out/$name"; fi
    RETURNED=$(date +%s)
    tail -n 5 "$WORK/out/$name.log"
    echo "call $name: exit $rc; came back: $(ls "$WORK/out/$name" 2>/dev/null | tr '\n' ' ')"
  }
  say "lease: $LEASE_S s of device time, start $START_S s, release $RELEASE_S s, profile $LEASE_SET"
  # the job's phase 1 on the CPU: tiny batches and steps; --set gives the training a CPU-sized profile
  JOBARGS="--deadline-file $LDIR/deadline --store $STORE --batch-size 8 --warmup-steps 1 --steps 2 --reserve-s 90"
  JOBARGS="$JOBARGS --stage-start-s 15"
  for item in $LEASE_SET; do JOBARGS="$JOBARGS --set $item"; done   # LEASE_SET: KEY=VALUE items, space-separated
  lease_call first .carry/data/part1 25 "PYTHONPATH=. python3 scripts/carry.py stash .carry/data/part1 || exit 1; echo \$(( \$(date +%s) + @JOB@ )) > $LDIR/deadline; PYTHONPATH=. setsid nohup python3 scripts/lease_job.py $JOBARGS > $LDIR/job.log 2>&1 < /dev/null & echo \$! > $LDIR/job.pid; sleep 2; cat $LDIR/job.log"
  JOBPID=$(cat "$LDIR/job.pid" 2>/dev/null || true)
  lease_call second .carry/data/part2 25 "echo \$(( \$(date +%s) + @JOB@ )) > $LDIR/deadline; PYTHONPATH=. python3 scripts/carry.py stash .carry/data/part2 && PYTHONPATH=. python3 scripts/carry.py prepare; tail -5 $LDIR/job.log"
  lease_call last "" 25 "end=\$(( \$(date +%s) + @WORK@ )); while [ ! -f $LDIR/done ] && [ \$(date +%s) -lt \$end ]; do sleep 5; done; cat $LDIR/done || true; python3 scripts/gpu.py pack-lease --out \$OUT"
  [ -n "$JOBPID" ] && kill -- -"$JOBPID" 2>/dev/null || true   # give_back: the machine and its job go
  say "lease: $(( $(date +%s) - LEASE_START )) s of $LEASE_S used"
  files=$(ls "$WORK/out/last" 2>/dev/null | wc -l)
  [ "$files" -ge 2 ] && [ "$files" -le 8 ] || { echo "error: the last call brought $files files back" >&2; exit 1; }
  big=$(find "$WORK/out/last" -type f -size +16M | wc -l)
  [ "$big" = 0 ] || { echo "error: a returned file is over 16 MiB" >&2; exit 1; }
  SCRATCH=$WORK/scratch-lease
  rm -rf "$SCRATCH" && git clone -q "$REPO" "$SCRATCH"
  "$VENV/bin/python3" scripts/gpu.py unpack "$WORK/out/last" --repo "$SCRATCH" | sed 's/^/  unpacked: /'
  [ -f "$SCRATCH/benchmarks/bench_lease.json" ] || { echo "error: no benchmark came back" >&2; exit 1; }
  (cd "$SCRATCH" && PYTHONPATH=. "$VENV/bin/python3" -m effnet.clock --gpu)
  ls "$SCRATCH"/checkpoints/*/last.pt.bf16.json 2>/dev/null | sed 's/^/  resumes from bf16: /' || true
  if [ -n "$(git -C "$SCRATCH" status --porcelain -- 'metrics/models/*.json')" ]; then
    read_back "$SCRATCH" "lease of $LEASE_S s"
  else
    echo "no model was evaluated inside the lease: nothing for dvc metrics show or the report to read"
  fi
  say "lease dry run passed: $WORK"
  exit 0
fi

say "2. here: carry parts"
"$VENV/bin/python3" scripts/gpu.py prepare --archive "$ARCHIVE"
nparts=$(ls -d .carry/part* | wc -l)

# call NAME DEVICE TIMEOUT_S COMMAND: run on the emulated device with $OUT fresh; killed (SIGKILL) at TIMEOUT_S
call() {
  local name=$1 device=$2 limit=$3 command=$4 rc=0
  rm -rf "$WORK/out/$name" && mkdir -p "$WORK/out/$name"
  say "call $name (timeout_s $limit): $command"
  (cd "$device" && PATH="$VENV/bin:$PATH" OUT="$WORK/out/$name" EFFNET_CARRY_STORE="$device.root/carry" \
     OMP_NUM_THREADS=1 timeout -s KILL "$limit" bash -c "$command") > "$WORK/out/$name.log" 2>&1 || rc=$?
  tail -n 4 "$WORK/out/$name.log"
  echo "call $name: exit $rc; came back: $(ls "$WORK/out/$name" | tr '\n' ' ')"
  echo "$rc" > "$WORK/out/$name.rc"
}

# carry_all DEVICE PREFIX: a window's first calls, one carried part each, the last one joining the data
carry_all() {
  local device=$1 prefix=$2 i last
  for i in $(seq 1 "$nparts"); do
    send "$device" ".carry/part$i"
    last=""; [ "$i" = "$nparts" ] && last=" && python3 scripts/gpu.py data $WINDOW"
    call "${prefix}carry$i" "$device" 600 "python3 scripts/gpu.py stash .carry/part$i$last"
  done
  send "$device"
}

say "3. the window, interrupted twice"
DEV=$WORK/device
carry_all "$DEV" ""
# the trainer's own budget: EFFNET_TIME_BUDGET_S caps each stage at 6 s here, as EFFNET_DEADLINE does on the GPU
call train1 "$DEV" 600 "EFFNET_TIME_BUDGET_S=6 python3 scripts/gpu.py run $WINDOW --limit-s 540"
[ "$(cat "$WORK/out/train1.rc")" = 75 ] || { echo "error: the budgeted call should exit 75" >&2; exit 1; }
# killed from outside at the call's limit, mid-run: the archive of this call is lost, the checkpoints are not
call killed "$DEV" 30 "python3 scripts/gpu.py run $WINDOW --limit-s 540"
call train2 "$DEV" 600 "python3 scripts/gpu.py run $WINDOW --limit-s 540"
[ "$(cat "$WORK/out/train2.rc")" = 0 ] || { echo "error: the finishing call failed" >&2; exit 1; }
call again "$DEV" 600 "python3 scripts/gpu.py run $WINDOW --limit-s 540"
[ "$(grep -c "finished earlier with the same settings, skipped" "$WORK/out/again.log")" = 2 ] \
  || { echo "error: the last call should skip both finished models" >&2; exit 1; }
grep -h "time budget reached\|resuming after\|hard time limit" "$WORK"/out/train1.log "$WORK"/out/killed.log "$WORK"/out/train2.log || true

say "4. the same window uninterrupted, on a fresh device"
REF=$WORK/reference
carry_all "$REF" "ref-"
call reference "$REF" 600 "python3 scripts/gpu.py run $WINDOW --limit-s 540"

say "5. compare: interrupted and resumed against uninterrupted"
"$VENV/bin/python3" - "$WORK" "$WINDOW" <<'PY'
import json, sys
from pathlib import Path
import yaml
work, models = Path(sys.argv[1]), yaml.safe_load(Path(sys.argv[2]).read_text())["models"]
timing = ("time", "images_per_s", "latency", "throughput", "seconds")
def results(device):  # what the device's evaluate stage and trainer wrote for the window's models
    found = {}
    for model in models:
        for path in (device / "metrics" / "models" / f"{model}.json", device / "dvclive" / model / "metrics.json"):
            found[str(path.relative_to(device))] = {k: v for k, v in json.loads(path.read_text()).items()
                                                    if not any(t in k for t in timing)}
    return found
a, b = results(work / "device"), results(work / "reference")
for name in a:
    assert a[name] == b[name], (name, a[name], b[name])
print(f"same metrics (every key but timings) in {len(a)} files: " + ", ".join(a))
print("e.g. " + ", ".join(f"{m}: train/loss {a[f'dvclive/{m}/metrics.json']['train']['loss']!r}" for m in models))
PY

say "6. unpack into a scratch clone, commit, and read it back with DVC"
SCRATCH=$WORK/scratch
rm -rf "$SCRATCH" && git clone -q "$REPO" "$SCRATCH"
for name in train1 train2 again; do
  "$VENV/bin/python3" scripts/gpu.py unpack "$WORK/out/$name" --repo "$SCRATCH" | sed "s/^/  $name: /"
done
read_back "$SCRATCH" "window $WINDOW"
say "dry run passed: $WORK"
