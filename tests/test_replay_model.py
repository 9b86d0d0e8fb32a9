"""The replay protocol (docs/replay.md, rdq/replay.pxi) under exhaustive interleaving:
tests/model/replay_model.py.

Each configuration must come out clean (no torn or stale sample, no redraw or short resident count
after end of stream, exact close counts, no producer step that depends on the owner, no deadlock)
and reach a clean end; each seeded bug must be caught, by the check named below.  Plain Python, no
MPI: a few seconds in all.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "model"))
import replay_model as model   # noqa: E402

pytestmark = pytest.mark.mpi_free

# the check that catches each seeded bug in its configuration (the start of the verdict)
CAUGHT_BY = {
    "shm_no_busy": "TORN SAMPLE",
    "rma_large_no_first_flush": "TORN SAMPLE",
    "rma_large_one_epoch": "TORN SAMPLE",
    "reader_no_recheck": "TORN SAMPLE",
    "reader_accepts_busy": "TORN SAMPLE",
    "checked_no_hash": "TORN SAMPLE",
    "close_before_flush": "REDRAWN AFTER END OF STREAM",
    "put_waits_for_reader": "PRODUCER WAITS FOR THE OWNER",
}


def report(capsys, line):
    with capsys.disabled():
        print("\n   replay model: " + line, end="")


@pytest.mark.parametrize("name", list(model.CONFIGS))
def test_clean(name, capsys):
    res = model.run(name, model.CONFIGS[name], show_trace=True, out=sys.stdout)
    report(capsys, f"{name}: {res['states']:,} states, {res['seconds']:.1f} s, {res['verdict']}")
    assert res["ok"], res["verdict"] + "\n" + "\n".join(res["trace"] or [])
    assert res["finals"] > 0, "the model never reached a clean end of stream"
    # not vacuous: some reads are redrawn, some accepted, some after end of stream
    assert res["rejected"] and res["accepted"] and res["accepted_after_eos"], res


def test_every_mutation_has_a_check():
    assert set(CAUGHT_BY) == set(model.MUTATIONS) == set(model.MUTATION_CONFIGS)


@pytest.mark.parametrize("mutation", list(model.MUTATIONS))
def test_mutation_caught(mutation, capsys):
    res = model.run(mutation, model.MUTATION_CONFIGS[mutation], mutation=mutation, show_trace=False)
    report(capsys, f"mutation {mutation}: {res['verdict']} ({len(res['trace'] or [])}-step trace)")
    assert not res["ok"] and res["trace"], f"seeded bug {mutation} not caught: {res['verdict']}"
    assert res["verdict"].startswith("VIOLATION: " + CAUGHT_BY[mutation]), res["verdict"]


def test_close_before_flush_shows_in_the_resident_count():
    """Without row reads, closing before the last flush shows as a resident count short of the
    close record's inserted count."""
    kw = dict(transport="rma", path="checked", M=1, C=1, R=0)
    res = model.run("close_before_flush, no reads", kw, mutation="close_before_flush", show_trace=False)
    assert res["verdict"].startswith("VIOLATION: RESIDENT SHORT AFTER END OF STREAM"), res["verdict"]
    assert model.run("clean, no reads", kw, show_trace=False)["ok"]


def test_mutations_leave_no_trace():
    """The seeded bug is switched off again after each run."""
    model.run("clean after mutation", dict(transport="shm", M=1, C=1), mutation="shm_no_busy", show_trace=False)
    assert not model.MUT


@pytest.mark.parametrize("name", list(model.FINDINGS))
def test_put_error_leaves_an_unreadable_slot_that_sample_drops(name):
    """After an MPI error in an rma put, close() still ends the stream while a resident slot stays
    half-written: the only read rejected after end of stream is that slot's, which rdq's sample()
    drops instead of retrying it for ever (replay_model's docstring)."""
    res = model.run(name, model.FINDINGS[name], show_trace=True, out=sys.stdout)
    assert res["ok"], res["verdict"] + "\n" + "\n".join(res["trace"] or [])
    assert res["rejected"], res
