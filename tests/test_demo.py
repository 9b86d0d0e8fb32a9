"""The README's main command: the in-situ training demo really learns, and reports."""
import json
import subprocess
import sys

from mpirun import launch, mpi_env, mpiexec_command


def test_demo_learns_a_surrogate(tmp_path):
    report, png = tmp_path / "report.json", tmp_path / "demo.png"
    cmd = mpiexec_command(3) + [sys.executable, "-m", "mpi4py", "-m", "rdq.demo", "--steps", "4000",
                                "--no-progress", "--json", str(report), "--png", str(png)]
    out, failure = launch(cmd, timeout=180)
    assert failure is None, f"{failure}\n{out[-4000:]}"
    r = json.loads(report.read_text())
    assert r["messages_received"] > 0 and r["messages_sampled_out"] > 0
    assert r["batch_copies"] == 0
    assert r["validation_mse"] < 0.5 * r["no_change_mse"], r
    assert png.stat().st_size > 10_000
    assert "validation" in out


def test_demo_help():
    proc = subprocess.run([sys.executable, "-m", "rdq.demo", "--help"], capture_output=True, text=True,
                          env=mpi_env(), timeout=60)
    assert proc.returncode == 0 and "--sample-p" in proc.stdout
