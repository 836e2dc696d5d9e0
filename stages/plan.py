"""DVC stage `plan`: the clock before any training: device, budget and an estimate of the whole run.

    python stages/plan.py [--params params.yaml] [--out plan] [--steps 3]

Prints the device found, the budget (networks, epochs, images per stage group) and the
estimated time of the whole run on this device (effnet/clock.py: a few timed training steps
of B0 times each network's cost relative to B0). On a CPU, when that is days, it says so and
names the smoke run and the CPU budget; it warns and goes on. Writes `--out/<group>.json`
(search, train, scale): each group's per-network budget, which the training stages list as a
dependency so that DVC runs this stage first; they hold no timing, so they change only with
the budget and never re-run a stage by themselves. The timing is kept in
`--out/timing.json` (git-ignored) for the training stages' "matrix model 5/11" lines.

Then, before anything trains, which training stages this run will train and their cost here
(`effnet.preflight`): those that `--lock` (dvc.lock, only read) lacks or recorded with other params,
and those that read the search's result when the search re-runs. `dvc exp run -S model.phi=4`
on a workspace whose dvc.lock was made with other settings thus says up front that it
re-runs the search and what that costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli, clock
from effnet.config import Params
from effnet.io import write_json
from effnet.preflight import preflight


def run(args: argparse.Namespace, params: Params) -> int:
    device, torch_device = clock.describe_device()
    seconds = clock.time_b0(params, torch_device, steps=args.steps)
    exponent = clock.measure_cost_exponent(params, torch_device, seconds)
    baselines = clock.measure_baseline_costs(params, torch_device, seconds)
    for line in clock.report(
        params, device, seconds, is_cpu=torch_device.type == "cpu", exponent=exponent, baseline_costs=baselines
    ):
        print(line, flush=True)
    for line in preflight(params, args.params, args.lock, seconds, exponent):
        print(line, flush=True)
    for group, entry in clock.stage_budgets(params).items():
        write_json(args.out / f"{group}.json", entry)
    clock.save_timing(args.out / "timing.json", device, seconds, params.network.base_resolution, exponent)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="plan", type=Path)
    parser.add_argument("--steps", default=3, type=int, help="timed training steps of B0")
    parser.add_argument("--lock", default="dvc.lock", type=Path, help="what DVC last recorded (read only)")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
