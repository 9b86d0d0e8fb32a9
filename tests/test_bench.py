"""Smoke test of the benchmark suite (bench/run.py --quick): every system runs end to end on tiny
sizes and the tables and plots are written, so the benchmark cannot rot.  No figure is checked
against a target here: speed lives in bench/RESULTS.md, measured on a quiet machine."""
import json
import sys
from pathlib import Path

import pytest

from mpirun import IS_OPEN_MPI, launch

ROOT = Path(__file__).resolve().parent.parent
for module in ("tqdm", "matplotlib"):   # rdq-mpi[bench]
    pytest.importorskip(module)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # ZeroMQ, Redis and ADIOS2 never touch MPI: the MPICH suite runs them, the Open MPI suite rdq's series
    only = ["--only", "rdq", "rdq-batch", "rdq-cython", "rdq-cython-batch", "rdq-more", "copy", "sendrecv",
            "rma-by-hand"] if IS_OPEN_MPI else []
    output, failure = launch([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", *only, "--out", str(out)], 600)
    assert failure is None, f"bench/run.py --quick: {failure}\n{output[-6000:]}"
    print(output)   # shown with -s: which peers ran, and why any did not
    return out, json.loads((out / "results.json").read_text()), output


def test_every_system_ran_or_says_why_not(quick_run):
    _, results, output = quick_run
    for series in results["series"]:
        for problem in series["problems"]:
            # a peer may be missing on a developer's machine, or no second MPI given: said, never dropped
            assert problem.startswith(("not installed", "not run")), f"{series['label']}: {problem}"
        if not series["problems"]:
            measured = {r["measure"] for r in series["results"]}
            assert measured == set(series["measures"]) - set(series["unsupported"]), series["label"]
    skipped = [s["label"] for s in results["series"] if s["problems"]]
    assert all(label in output for label in skipped)


def test_rdq_figures_are_complete(quick_run):
    _, results, _ = quick_run
    rdq = results["series"][0]
    assert rdq["system"] == "rdq" and not rdq["problems"]
    rates = {r["size"]: r for r in rdq["results"] if r["measure"] == "rate"}
    assert sorted(rates) == sorted(results["config"]["sizes"])
    assert all(r["msg_per_s"] > 0 and r["transport"] == "shm" for r in rates.values())
    fanin = sorted(r["producers"] for r in rdq["results"] if r["measure"] == "fanin")
    assert fanin == results["config"]["fanin"]
    stall = [r for r in rdq["results"] if r["measure"] == "stall"]
    assert {r["mode"] for r in stall} == {"sleep", "numpy"} and all(r["max_put_s"] > 0 for r in stall)
    memory = next(r for r in rdq["results"] if r["measure"] == "memory")
    assert memory["total_bytes"] == results["config"]["memory_total"]


def test_tables_and_plot_are_written(quick_run):
    out, results, _ = quick_run
    md = (out / "results.md").read_text()
    for heading in ("Targets", "Message rate", "Many producers", "Put latency", "Producer stall", "memory"):
        assert heading in md
    for series in results["series"]:
        assert series["label"] in md
    assert (out / "rate.png").stat().st_size > 10_000


def test_rate_rounds_merge_into_their_median():
    sys.path.insert(0, str(ROOT / "bench"))
    from run import merge_rounds
    trial = {"measure": "rate", "size": 64, "producers": 1}
    rounds = [dict(trial, runs_msg_per_s=[rate]) for rate in (3.0, 1.0, 2.0)]
    other = {"measure": "latency", "size": 64, "median_s": 1e-6}
    merged = merge_rounds(rounds + [dict(trial, producers=2, runs_msg_per_s=[5.0]), other])
    by_producers = {r["producers"]: r for r in merged if r["measure"] == "rate"}
    assert by_producers[1]["runs_msg_per_s"] == [3.0, 1.0, 2.0]
    assert by_producers[1]["msg_per_s"] == 2.0 and by_producers[1]["GB_per_s"] == 2.0 * 64 / 1e9
    assert by_producers[2]["msg_per_s"] == 5.0
    assert other in merged


def test_replay_bench_quick(tmp_path):
    """bench/replay.py --quick on the shared-memory path (about a second): inserts against Queue.put
    and sample() against the one-copy limit run, and their tables are written."""
    output, failure = launch([sys.executable, str(ROOT / "bench" / "replay.py"), "--quick", "--paths", "shm",
                              "--out", str(tmp_path)], 120)
    assert failure is None, f"bench/replay.py --quick: {failure}\n{output[-6000:]}"
    results = json.loads((tmp_path / "replay.json").read_text())
    (path,) = results["paths"]
    assert path["name"] == "shm" and not path["problems"], path["problems"]
    inserts = {r["size"]: r for r in path["records"] if r["measure"] == "insert"}
    assert sorted(inserts) == sorted(results["config"]["sizes"])
    for r in inserts.values():   # the window policy writes every put
        assert r["transport"] == "shm" and r["fifo_msg_per_s"] > 0 and r["replay_msg_per_s"] > 0
        assert r["replay_skipped"] == 0 and r["replay_inserted"] > r["capacity"]
    samples = [r for r in path["records"] if r["measure"] == "sample"]
    assert [r["row"] for r in samples] == results["config"]["rows"]
    assert all(r["sample_s"] > 0 and r["limit_s"] > 0 and r["ratio"] > 0 for r in samples)
    md = (tmp_path / "replay.md").read_text()
    assert "inserts against the FIFO queue's put" in md and "sample(k) against the one-copy limit" in md
