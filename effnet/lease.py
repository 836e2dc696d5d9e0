"""Time on a leased GPU machine: each call's `timeout_s` and the trainer's deadline, from the device time left.

The device tool lends one machine for a fixed amount of device time per task, counted from the
asking for a machine until it goes back: its start, every call, the transfers, the idle waits
between calls and the 30 s it stays warm after the last one. A call still running when that time
is spent is cut, and a cut call brings nothing back. So nothing here is a fixed number of seconds:
every call's `timeout_s`, and the deadline by which the work on the machine must stop so that the
last call can still pack and return, is computed from `budget_left_s` (what the tool's `status`
reports) read just before the call.

Two deadlines, both in seconds after the call's command starts on the machine (the machine's clock
need not agree with this one, so nothing absolute crosses over):

- `CallBudget.timeout_s`: the call's limit. The command must have written everything it returns
  into $OUT by then.
- `CallBudget.work_s`: when the work of this call (a trainer started with EFFNET_DEADLINE, or
  the background job a first call leaves running) must be over, leaving `pack_s` to pack and
  `stop_s` for a trainer to stop after its deadline (it never starts an epoch that would end past
  the deadline, but the estimate of an epoch's time can be short, and the checkpoint is written
  after it).

`lease_left_s` is the device time left when the command starts; a background job started then
(`setsid`) may run until `work_s` of the *last* call, which is computed the same way from the
budget read before that call; `job_work_s` gives the first call's estimate of it. The figures in
`LeaseCosts` are estimates until a lease measures them; pass measured ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class LeaseError(ValueError):
    """The lease cannot hold the call: too little device time left, or unusable figures. The message says which."""


@dataclass(frozen=True)
class LeaseCosts:
    """What a lease costs besides the commands, in seconds. Limits from the device tool; the rest estimates."""

    per_call_s: int = 600  # the tool's limit on one command (timeout_s at most)
    min_start_left_s: float = 240.0  # the tool starts no machine with less device time left than this
    release_s: float = 30.0  # a machine stays warm, and counts, this long after a call returns
    start_s: float = 120.0  # a fresh machine's start ("a minute or more"): estimate
    transfer_in_s: float = 30.0  # the tree and a 64 MiB carry to the machine: estimate
    transfer_out_s: float = 20.0  # up to 8 files, 64 MiB, back from $OUT: estimate
    margin_s: float = 120.0  # held back from every plan, for everything the estimates miss

    def __post_init__(self) -> None:
        for name in ("min_start_left_s", "release_s", "start_s", "transfer_in_s", "transfer_out_s", "margin_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise LeaseError(f"LeaseCosts.{name} must be a finite number of seconds >= 0, got {value!r}")
        if not (isinstance(self.per_call_s, int) and 1 <= self.per_call_s <= 600):
            raise LeaseError(
                f"LeaseCosts.per_call_s must be an integer in 1..600 (the tool's limit), got {self.per_call_s!r}"
            )


@dataclass(frozen=True)
class CallBudget:
    """One call's time, in seconds after its command starts on the machine (see the module docstring)."""

    timeout_s: int  # pass as the call's timeout_s
    work_s: int  # the work must be over by then: EFFNET_DEADLINE = command start + work_s
    lease_left_s: float  # device time left at the command's start (estimate)
    capped: bool  # True when the per-call limit, not the lease, set timeout_s: the lease holds another call

    def deadline_shell(self) -> str:
        """A shell assignment of EFFNET_DEADLINE (seconds since the epoch, the machine's clock) for the command."""
        return f"EFFNET_DEADLINE=$(( $(date +%s) + {self.work_s} ))"


def _seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LeaseError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def lease_left_at_command(budget_left_s: float, *, warm: bool, costs: LeaseCosts = LeaseCosts()) -> float:
    """Device time left when the call's command starts: the budget, less the start (if no machine is warm) and the
    transfer in.

    Raises LeaseError when no machine is warm and less than `costs.min_start_left_s` is left:
    the tool would start none.
    """
    budget_left_s = _seconds(budget_left_s, "budget_left_s")
    if not warm and budget_left_s < costs.min_start_left_s:
        raise LeaseError(
            f"{budget_left_s:.0f} s of device time left and no machine warm: the tool starts none "
            f"with under {costs.min_start_left_s:.0f} s left; plan this work for a later lease"
        )
    return budget_left_s - (0.0 if warm else costs.start_s) - costs.transfer_in_s


def call_budget(
    budget_left_s: float, *, warm: bool, pack_s: float = 20.0, stop_s: float = 0.0, costs: LeaseCosts = LeaseCosts()
) -> CallBudget:
    """The call's `timeout_s` and work deadline from the device time left, read just before the call.

    timeout_s = min(per-call limit, time left at the command's start - transfer out - release - margin),
    rounded down; work_s = timeout_s - pack_s - stop_s. The release (the 30 s the machine idles
    after the call) is held back as well, since the budget counts it. Raises LeaseError when the
    tool would start no machine, or when the rest leaves no second of work.
    """
    pack_s, stop_s = _seconds(pack_s, "pack_s"), _seconds(stop_s, "stop_s")
    left = lease_left_at_command(budget_left_s, warm=warm, costs=costs)
    room = left - costs.transfer_out_s - costs.release_s - costs.margin_s
    timeout_s = math.floor(min(float(costs.per_call_s), room))
    work_s = math.floor(timeout_s - pack_s - stop_s)
    if work_s < 1:
        raise LeaseError(
            f"{budget_left_s:.0f} s of device time left{'' if warm else ' (a start included)'} "
            f"leave {room:.0f} s for the command after the transfers, the release and the "
            f"{costs.margin_s:.0f} s margin: not enough to work {pack_s + stop_s:.0f} s of packing and "
            "stopping; do not start the call"
        )
    return CallBudget(timeout_s=timeout_s, work_s=work_s, lease_left_s=left, capped=timeout_s == costs.per_call_s)


def job_work_s(
    budget_left_s: float, *, warm: bool, pack_s: float = 20.0, stop_s: float = 0.0, costs: LeaseCosts = LeaseCosts()
) -> int:
    """Seconds after this call's command starts by which a background job it leaves running must be done.

    The job outlives this call; the lease's last call waits for it, then packs and returns. So
    the job may use the whole lease left at this command's start, less the last call's packing,
    the transfer out, the release and the margin; the calls in between cost the job nothing as
    long as each follows the last within `costs.release_s` (else the machine, and the job, are gone).
    The last call recomputes this from the budget read before it (`call_budget(...).work_s`),
    which already counts the true start and transfers.

    The last call is also held to the per-call limit: it can wait at most `costs.per_call_s -
    pack_s - stop_s` after its command starts, and it starts no earlier than this command. So the
    job's time is capped there too: a longer lease (a budget above about 920 s with the default
    costs) would otherwise give the job a deadline past the end of the last call's wait, and the
    packing would stop it mid-work. The cap loses at most the calls in between (their transfers and
    commands) of the job's time, and only when it binds.
    """
    pack_s, stop_s = _seconds(pack_s, "pack_s"), _seconds(stop_s, "stop_s")
    left = lease_left_at_command(budget_left_s, warm=warm, costs=costs)
    work = math.floor(
        min(left - costs.transfer_out_s - costs.release_s - costs.margin_s, float(costs.per_call_s)) - pack_s - stop_s
    )
    if work < 1:
        raise LeaseError(
            f"{budget_left_s:.0f} s of device time left leave no time for a background job; do not start it"
        )
    return work
