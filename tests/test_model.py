"""The multi-ring protocol (docs/protocol.md) under exhaustive interleaving: tests/model/multiring_model.py.

Each configuration must come out clean (no violation, no deadlock, and the model does reach the
end of the stream); each seeded bug must be caught.  Plain Python, no MPI: the whole file takes
well under a minute on a slow 2-core machine.

Fairness, as checked (configurations with fairness=True):
  - get() only: a ring with a sent message waits for at most P - 1 deliveries of other rings.
  - get_batch(k): the model has no clock, so a ring may be passed over for as long as its grace
    period has not elapsed (a producer that keeps sending may always fill a batch of its own).  What
    is checked is the bound that holds once the grace has elapsed: a ring that was passed over with
    a ticket waiting and in which nothing new arrived for the grace period (it is "due") is served
    by the very next delivery if it is the first due ring of the round robin and no ring before it
    leads by itself (k ready, or a closed producer's remainder), and in any case within P - 1
    deliveries of other rings.  So no ring with a ready ticket is passed over forever once it stops
    growing.  Seeded bug passed_never_leads (the grace rule removed) breaks it with two producers,
    one stopped after one message, the other sending batches of k.

Seeded bug end_before_reachable is ring_select as rdq/ring.pxi has it today (SELECT_END tested before
total < reachable): it loses the last messages of a producer that closes during the owner's scan.
The clean configurations model the order the model proposes (total < reachable first).
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "model"))
import multiring_model as model   # noqa: E402

pytestmark = pytest.mark.mpi_free

# Where a seeded bug needs larger bounds to show without the ghost checks (what a user would see).
OBSERVABLE = {
    "no_return_lock": dict(transport="shm", P=1, M=3, C=2, releaser=True),
}


def report(capsys, line):
    with capsys.disabled():
        print("\n   model: " + line, end="")


@pytest.mark.parametrize("name", list(model.QUICK))
def test_clean(name, capsys):
    res = model.run(name, model.QUICK[name], show_trace=True, out=sys.stdout)
    report(capsys, f"{name}: {res['states']:,} states, {res['transitions']:,} transitions, "
                   f"{res['seconds']:.1f} s, {res['verdict']}")
    assert res["ok"], res["verdict"] + "\n" + "\n".join(res["trace"] or [])
    assert res["finals"] > 0, "the model never reached a clean end of stream"


@pytest.mark.parametrize("mutation", list(model.MUTATIONS))
def test_mutation_caught(mutation, capsys):
    res = model.run(mutation, model.MUTATION_CONFIGS[mutation], mutation=mutation, show_trace=False)
    report(capsys, f"mutation {mutation}: {res['verdict']} ({len(res['trace'] or [])}-step trace)")
    assert not res["ok"] and res["trace"], f"seeded bug {mutation} not caught: {res['verdict']}"


@pytest.mark.parametrize("mutation", list(model.MUTATIONS))
def test_mutation_observable(mutation, capsys):
    """Each seeded bug also shows as something a user would see: a torn, stale, lost or duplicated
    message, an early end of stream, or a hang."""
    kw = OBSERVABLE.get(mutation, model.MUTATION_CONFIGS[mutation])
    res = model.run(mutation, kw, mutation=mutation, observable_only=True, show_trace=False)
    report(capsys, f"mutation {mutation} (observable only): {res['verdict']} ({len(res['trace'] or [])}-step trace)")
    assert not res["ok"] and res["trace"], f"seeded bug {mutation} has no observable effect: {res['verdict']}"


def test_mutations_leave_no_trace():
    """The seeded bug is switched off again after each run."""
    model.run("clean after mutation", dict(transport="shm", P=1, M=1, C=1), mutation="no_credit_wait", show_trace=False)
    assert not model.MUT


def test_free_list_survives_torn_reads():
    """A free-list record that MPI_Get tears bit by bit while the owner rewrites it fails its check."""
    name, kw = next(iter(model.FINDINGS.items()))
    res = model.run(name, kw, show_trace=False)
    assert res["ok"], res["verdict"]
