#!/usr/bin/env python3
"""Print the next device call's timeout_s and deadlines from the device time left (see effnet/lease.py, docs/lease.md).

    python scripts/lease.py --budget-left 900 --cold          # before the first call: a machine must start
    python scripts/lease.py --budget-left 610 --pack-s 25     # before a later call, the machine still warm

Read `budget_left_s` from the device tool's `status` just before the call. Prints JSON:
timeout_s (the call's), work_s and the EFFNET_DEADLINE line for its command, job_work_s (how long a
background job started by this call may run) and capped (the per-call limit set timeout_s, so a
later call fits). Exits 1, with the reason, when the lease cannot hold the call.
"""

from __future__ import annotations

import argparse
import json
import sys

from effnet.lease import LeaseCosts, LeaseError, call_budget, job_work_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-left", type=float, required=True, help="budget_left_s from the tool's status")
    parser.add_argument("--cold", action="store_true", help="no machine is warm: this call pays the start")
    parser.add_argument("--pack-s", type=float, default=20.0, help="the command's packing after its work")
    parser.add_argument("--stop-s", type=float, default=0.0, help="a trainer's time to stop after its deadline")
    defaults = LeaseCosts()
    for name in ("start_s", "transfer_in_s", "transfer_out_s", "release_s", "margin_s"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    try:
        costs = LeaseCosts(
            start_s=args.start_s,
            transfer_in_s=args.transfer_in_s,
            transfer_out_s=args.transfer_out_s,
            release_s=args.release_s,
            margin_s=args.margin_s,
        )
        call = call_budget(args.budget_left, warm=not args.cold, pack_s=args.pack_s, stop_s=args.stop_s, costs=costs)
        job = job_work_s(args.budget_left, warm=not args.cold, pack_s=args.pack_s, stop_s=args.stop_s, costs=costs)
    except LeaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "timeout_s": call.timeout_s,
                "work_s": call.work_s,
                "deadline": call.deadline_shell(),
                "job_work_s": job,
                "lease_left_at_command_s": round(call.lease_left_s, 1),
                "capped": call.capped,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
