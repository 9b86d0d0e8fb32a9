"""The README's main command: the in-situ training demo (python -m rdq.demo) really learns, and reports."""
import json
import sys

import pytest

from mpirun import launch, mpiexec_command

for module in ("torch", "tqdm", "matplotlib"):   # the demo's dependencies (rdq-mpi[demo])
    pytest.importorskip(module)

TIMEOUT = 180   # seconds; a short run takes about 20 on a busy 2-core machine


def run_demo(prefix, *args, timeout=TIMEOUT):
    """Output of `prefix python -m mpi4py -m rdq.demo args` (mpi4py aborts the job when a rank
    raises); fails the test on a non-zero exit or a hang (launch kills the whole process group)."""
    cmd = prefix + [sys.executable, "-m", "mpi4py", "-m", "rdq.demo", *map(str, args)]
    out, failure = launch(cmd, timeout)
    assert failure is None, f"{' '.join(cmd)}: {failure}\noutput (last 6000 chars):\n{out[-6000:]}"
    return out


def test_help():
    out = run_demo([], "--help", timeout=60)
    assert "--sample-p" in out and "--json" in out


# The same stream length either way: a single producer runs twice the steps.
@pytest.mark.parametrize("ranks, steps", [(3, 6000), (2, 12000)])
def test_demo_learns_from_the_stream(tmp_path, ranks, steps):
    report_path, png_path = tmp_path / "report.json", tmp_path / "demo.png"
    out = run_demo(mpiexec_command(ranks), "--steps", steps, "--no-progress",
                   "--json", report_path, "--png", png_path)
    r = json.loads(report_path.read_text())
    assert r["producers"] == ranks - 1
    assert r["messages_received"] > 0, out
    assert r["messages_sampled_out"] > 0, out       # Bernoulli sampling at p = 0.5
    assert r["batch_copies"] == 0, out              # the batch size divides the capacity
    assert r["validation_mse"] < 0.5 * r["no_change_mse"], out
    assert png_path.stat().st_size > 10_000
    assert "validation" in out


def test_demo_trains_from_a_reservoir(tmp_path):
    """--buffer reservoir: the simulation never waits, the reservoir keeps `capacity` of its samples,
    and the trainer learns from batches drawn from them (some drawn again), then 4 passes at the end."""
    report_path, png_path = tmp_path / "report.json", tmp_path / "demo.png"
    out = run_demo(mpiexec_command(2), "--buffer", "reservoir", "--seconds", 2, "--grid", 16, "--capacity", 128,
                   "--batch-size", 16, "--val-trajectories", 2, "--no-progress",
                   "--json", report_path, "--png", png_path)
    r = json.loads(report_path.read_text())
    assert r["buffer"] == "reservoir" and r["producers"] == 1, out
    assert r["messages_produced"] == r["messages_inserted"] + r["messages_skipped"], out
    assert r["messages_skipped"] > 0 and r["resident"] == 128, out     # far more samples than slots
    assert r["messages_evicted"] == r["messages_inserted"] - 128, out
    assert r["producer_put_fraction"] < 0.5, out                       # put never waits for the trainer
    assert r["messages_trained_on"] == r["batches"] * 16, out
    assert 0 < r["distinct_messages_trained_on"] <= min(r["messages_trained_on"], r["messages_inserted"]), out
    assert r["training_steps_after_end"] == 4 * 128 // 16 and r["reuse"] > 0, out
    assert r["validation_mse"] < 0.5 * r["no_change_mse"], out
    assert png_path.stat().st_size > 10_000
    assert "reservoir replay buffer" in out and "distinct messages" in out
