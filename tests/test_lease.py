"""The lease's deadlines: every timeout from the device time left, and no work that outlives its call."""

from __future__ import annotations

import subprocess

import pytest

from effnet.lease import LeaseCosts, LeaseError, call_budget, job_work_s, lease_left_at_command

COSTS = LeaseCosts(start_s=100, transfer_in_s=30, transfer_out_s=20, release_s=30, margin_s=120, min_start_left_s=240)


def test_a_cold_start_costs_the_start_and_the_transfer_in():
    assert lease_left_at_command(900, warm=False, costs=COSTS) == 900 - 100 - 30
    assert lease_left_at_command(900, warm=True, costs=COSTS) == 900 - 30


def test_no_machine_starts_with_under_four_minutes_left():
    with pytest.raises(LeaseError, match="starts none with under 240 s"):
        call_budget(239.9, warm=False, costs=COSTS)
    # a warm machine is no start: 239 s still hold a short call
    assert call_budget(239, warm=True, costs=COSTS).timeout_s == 239 - 30 - 20 - 30 - 120


def test_four_minutes_cold_start_a_machine_but_leave_no_call_inside_the_margin():
    # the tool would start it, but the start, transfers, release and margin eat it all
    with pytest.raises(LeaseError, match="do not start the call"):
        call_budget(240, warm=False, costs=COSTS)


def test_timeout_from_the_time_left_and_the_work_ends_before_it():
    budget = call_budget(500, warm=False, pack_s=25, stop_s=15, costs=COSTS)
    assert budget.timeout_s == 500 - 100 - 30 - 20 - 30 - 120  # 200
    assert budget.work_s == budget.timeout_s - 25 - 15
    assert not budget.capped
    # the call returns (transfer out included) and idles its release inside the lease, margin to spare
    assert budget.timeout_s + COSTS.transfer_out_s + COSTS.release_s + COSTS.margin_s <= budget.lease_left_s


def test_the_per_call_limit_caps_the_timeout_and_says_another_call_fits():
    budget = call_budget(900, warm=True, costs=COSTS)
    assert budget.timeout_s == 600 and budget.capped
    assert call_budget(900, warm=True, costs=LeaseCosts(per_call_s=300)).timeout_s == 300


def test_a_fraction_of_a_second_is_rounded_down_never_up():
    assert call_budget(400.9, warm=True, pack_s=0.5, costs=COSTS).timeout_s == 200
    assert call_budget(400.9, warm=True, pack_s=0.5, costs=COSTS).work_s == 199


def test_packing_longer_than_the_call_is_refused():
    with pytest.raises(LeaseError, match="packing and stopping"):
        call_budget(300, warm=True, pack_s=100, costs=COSTS)  # timeout 100 s, nothing left to work


def test_bad_figures_are_refused_by_name():
    for bad in (-1, float("nan"), float("inf"), "600", True):
        with pytest.raises(LeaseError, match="budget_left_s"):
            call_budget(bad, warm=True, costs=COSTS)
    with pytest.raises(LeaseError, match="pack_s"):
        call_budget(900, warm=True, pack_s=-1, costs=COSTS)
    with pytest.raises(LeaseError, match="LeaseCosts.per_call_s"):
        LeaseCosts(per_call_s=601)
    with pytest.raises(LeaseError, match="LeaseCosts.start_s"):
        LeaseCosts(start_s=-5)


def test_the_background_job_ends_before_the_last_call_must_pack():
    """A job started by the first call may use the lease up to the last call's packing, transfer out, release and
    margin."""
    first_budget = 900.0
    first = call_budget(first_budget, warm=False, costs=COSTS)
    job = job_work_s(first_budget, warm=False, pack_s=20, costs=COSTS)
    assert job == 900 - 100 - 30 - 20 - 30 - 120 - 20  # 580 s after the first command starts
    # the last call, made once 300 s of the lease are gone (the start, call 1, call 2, the gaps), warm:
    elapsed_at_last_ask = 300.0
    last = call_budget(first_budget - elapsed_at_last_ask, warm=True, pack_s=20, costs=COSTS)
    # in the first command's time: the last command starts after its transfer in
    last_start = elapsed_at_last_ask + COSTS.transfer_in_s - (COSTS.start_s + COSTS.transfer_in_s)
    assert last_start + last.work_s == job  # the same instant, computed from either call's budget
    assert job + 20 <= last_start + last.timeout_s  # packed before the last call's timeout: its output comes back
    assert first.timeout_s <= 600


def test_a_long_lease_caps_the_job_at_what_the_last_call_can_wait_for():
    """Found by the --lease dry run (LEASE_S=1200): the job's deadline came from the lease left, but the last call,
    held to the per-call limit, stopped waiting about six minutes before it and packing stopped the job."""
    for budget_left in (1200.0, 3600.0):
        job = job_work_s(budget_left, warm=False, pack_s=25, stop_s=5, costs=COSTS)
        assert job == 600 - 25 - 5
        # the last call starts no earlier than this command; however soon it follows, its wait covers the job
        for last_start in (0.0, 40.0, 200.0):
            last = call_budget(budget_left - 150 - last_start, warm=True, pack_s=25, stop_s=5, costs=COSTS)
            assert last.capped and job <= last_start + last.work_s
    # under the real 900 s lease the lease, not the per-call limit, sets the job's deadline: nothing changes
    assert job_work_s(900, warm=False, pack_s=20, costs=COSTS) == 900 - 100 - 30 - 20 - 30 - 120 - 20
    assert job_work_s(900, warm=False, pack_s=20, costs=LeaseCosts(per_call_s=300)) == 300 - 20


def test_the_deadline_is_an_offset_on_the_machines_own_clock():
    budget = call_budget(700, warm=True, pack_s=20, costs=COSTS)
    line = budget.deadline_shell()
    assert line == f"EFFNET_DEADLINE=$(( $(date +%s) + {budget.work_s} ))"
    out = subprocess.run(
        ["bash", "-c", f"now=$(date +%s); {line}; echo $((EFFNET_DEADLINE - now))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(out) in (budget.work_s, budget.work_s + 1)  # the clock may tick between the two reads


def test_the_script_prints_the_calls_figures_and_refuses_a_lease_too_short(capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "lease_script", Path(__file__).resolve().parents[1] / "scripts" / "lease.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--budget-left", "900", "--cold", "--start-s", "100", "--pack-s", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = call_budget(900, warm=False, pack_s=20, costs=LeaseCosts(start_s=100))
    assert printed["timeout_s"] == expected.timeout_s == 900 - 100 - 30 - 20 - 30 - 120
    assert printed["work_s"] == expected.work_s and printed["deadline"] == expected.deadline_shell()
    assert printed["job_work_s"] == job_work_s(900, warm=False, pack_s=20, costs=LeaseCosts(start_s=100))
    assert script.main(["--budget-left", "200", "--cold"]) == 1
    assert "starts none with under 240 s" in capsys.readouterr().err
