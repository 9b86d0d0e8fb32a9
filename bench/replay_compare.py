"""Training buffers at equal wall time: the in-situ demo (python -m rdq.demo) with a FIFO queue
and backpressure, a FIFO queue with Bernoulli sampling on the producers, and the replay buffers.

    .venv/bin/python bench/replay_compare.py [--seconds 40] [--ranks 2] [--png bench/replay-compare.png]

Each case is one `mpiexec -n RANKS python -m rdq.demo --seconds SECONDS --json ...` job, launched in a
process group of its own with a hard timeout (tests/mpirun.py's launch: on expiry it kills that
group, nothing else).  The simulations run for the same wall time in every case; the trainer is
slower than they are with the demo's defaults (a 3-layer CNN step on a batch of 32 takes longer
than the simulation needs to make 32 samples, about 20 times longer on the 2-core development
machine).  Unless --sample-p is given, the Bernoulli case runs last, and its p is calibrated from
the runs before it: p = margin x (rows the FIFO trainer consumed per second, backpressure run) /
(samples the simulations make per second of their own time, the fastest of the runs), so that
the trainer keeps up.

Prints a table (fraction of simulation time in put, messages produced, messages trained on, distinct
ones, reuse, validation error and the no-change baseline) and writes a figure (--png).
"""
import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from mpirun import launch, mpiexec_command  # noqa: E402  (the tests' launcher: hard timeout, group kill)

CASES = {   # name: (label, demo arguments), in the order of the table
    "backpressure": ("FIFO, backpressure (p = 1)", ["--buffer", "fifo", "--sample-p", "1"]),
    "bernoulli": ("FIFO, Bernoulli p = {p:g}", ["--buffer", "fifo"]),
    "reservoir": ("reservoir replay buffer", ["--buffer", "reservoir"]),
    "window": ("window replay buffer", ["--buffer", "window"]),
}
TICKS = {"backpressure": "FIFO\nbackpressure", "bernoulli": "FIFO\nBernoulli p = {p:g}",
         "reservoir": "reservoir\nreplay buffer", "window": "window\nreplay buffer"}
COLORS = {"backpressure": "tab:red", "bernoulli": "tab:orange", "reservoir": "tab:blue", "window": "tab:green"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40,
                        help="wall time of the simulations in every case, the demo's --seconds (default: %(default)s)")
    parser.add_argument("--ranks", type=int, default=2,
                        help="MPI ranks: RANKS-1 simulations and the trainer.  The default 2 gives each its own "
                             "core on a 2-core machine, so that simulations that never wait do not slow the "
                             "trainer down by taking its core (default: %(default)s)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                        help="cases to run (default: all); without --sample-p, bernoulli needs backpressure")
    parser.add_argument("--sample-p", type=float, default=None,
                        help="p of the Bernoulli case (default: calibrated, see --margin)")
    parser.add_argument("--margin", type=float, default=0.7,
                        help="the calibrated p is this fraction of what the trainer could take (default: %(default)s)")
    parser.add_argument("--passes", type=float, default=0.25,
                        help="the replay cases' --passes after the deadline: 0.25 x the default 1024 slots = 256 "
                             "rows per simulation, what a full FIFO queue of the demo's (8 batches of 32) still "
                             "gives its trainer after the deadline, so that every case trains for about the "
                             "same time (default: %(default)s)")
    parser.add_argument("--demo-args", default="",
                        help="more arguments for every demo run, one shell-quoted string (e.g. \"--capacity 2048\")")
    parser.add_argument("--timeout", type=float, default=None,
                        help="hard limit per run in seconds (default: --seconds + 150)")
    parser.add_argument("--png", default=str(HERE / "replay-compare.png"), help="figure (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every run's report to PATH")
    args = parser.parse_args(argv)
    if args.ranks < 2:
        parser.error("--ranks must be at least 2")
    if args.sample_p is None and "bernoulli" in args.cases and "backpressure" not in args.cases:
        parser.error("the bernoulli case needs --sample-p, or the backpressure case to calibrate p")
    if args.sample_p is not None and not 0 < args.sample_p <= 1:
        parser.error("--sample-p must be in (0, 1]")
    return args


def run_demo(args, name, extra, workdir):
    """One demo job; returns its report (dict) and the command line."""
    report = Path(workdir) / f"{name}.json"
    cmd = (mpiexec_command(args.ranks) + [sys.executable, "-m", "mpi4py", "-m", "rdq.demo"] + extra +
           ["--seconds", f"{args.seconds:g}", "--no-progress", "--json", str(report),
            "--png", str(Path(workdir) / f"{name}.png")] + shlex.split(args.demo_args))
    timeout = args.timeout if args.timeout is not None else args.seconds + 150
    started, load = time.perf_counter(), os.getloadavg()[0]
    out, failure = launch(cmd, timeout, cwd=workdir)
    if failure is not None:
        raise SystemExit(f"{name}: {shlex.join(cmd)}: {failure}\noutput (last 4000 chars):\n{out[-4000:]}")
    # the load before and after: other work on the machine slows the simulations and the trainer
    print(f"  {name}: {time.perf_counter() - started:.0f} s (load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)", flush=True)
    return json.loads(report.read_text())


def simulation_rate(r):
    """Samples per second that run r's simulations made together, counting only their own time
    (not the time in put): what they make when they never wait."""
    return r["messages_produced"] * r["producers"] / (r["producer_seconds"] - r["producer_put_seconds"])


def calibrate(reports, margin):
    """p at which the FIFO trainer would keep up with simulations that never wait."""
    trainer_rate = reports["backpressure"]["messages_trained_on"] / reports["backpressure"]["stream_seconds"]
    sim_rate = max(simulation_rate(r) for r in reports.values())
    p = min(1.0, margin * trainer_rate / sim_rate)
    return float(f"{p:.2g}"), trainer_rate, sim_rate


def table(runs):
    lines = ["| case | time in put | produced | trained on (rows) | distinct | rows / distinct | reuse (stats) | "
             "steps (after end) | validation MSE | no-change MSE | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label, r in runs:
        replay = r["buffer"] != "fifo"
        rows, distinct = r["messages_trained_on"], r["distinct_messages_trained_on"]
        cells = [label, f"{r['producer_put_fraction']:.1%}", f"{r['messages_produced']:,}", f"{rows:,}",
                 f"{distinct:,}", f"{rows / max(1, distinct):.2f}",
                 f"{r['reuse']:.2f}" if replay else "-",
                 f"{r['batches']} ({r['training_steps_after_end']})" if replay else f"{r['batches']}",
                 f"{r['validation_mse']:.2e}", f"{r['no_change_mse']:.2e}", f"{r['mse_ratio']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def moving_average(values, window):
    import numpy as np
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot(runs, args, path):
    import numpy as np
    from matplotlib.figure import Figure   # Agg, no pyplot state
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axes = fig.subplots(2, 2)
    names = [name for name, _, _ in runs]
    labels = [TICKS[name].format(p=r.get("sample_p")) for name, _, r in runs]
    colors = [COLORS[name] for name in names]
    x = np.arange(len(runs))

    ax = axes[0, 0]
    fractions = [100 * r["producer_put_fraction"] for _, _, r in runs]
    ax.bar(x, fractions, color=colors)
    for i, f in enumerate(fractions):
        ax.text(i, f + 1, f"{f:.1f}%", ha="center")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of simulation time in put()")
    ax.set_title("Simulation time spent in put (waiting for the trainer)")

    ax = axes[0, 1]
    width = 0.27
    series = [("produced", "messages_produced", "0.6"), ("trained on (rows)", "messages_trained_on", "tab:purple"),
              ("distinct trained on", "distinct_messages_trained_on", "tab:cyan")]
    for j, (what, key, color) in enumerate(series):
        values = [r[key] for _, _, r in runs]
        ax.bar(x + (j - 1) * width, values, width, label=what, color=color)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 8)   # room for the legend
    ax.set_xticks(x, labels)
    ax.set_ylabel("messages")
    ax.set_title(f"Messages in {args.seconds:g} s of simulation")
    ax.legend(loc="upper right", fontsize="small")

    ax = axes[1, 0]
    mses = [r["validation_mse"] for _, _, r in runs]
    ax.bar(x, mses, color=colors)
    for i, (m, (_, _, r)) in enumerate(zip(mses, runs)):
        ax.text(i, m * 1.1, f"{m:.2e}\n({r['mse_ratio']:.4f} of\nno change)", ha="center", fontsize="small")
    ax.axhline(runs[0][2]["no_change_mse"], color="gray", ls="--", label="no-change baseline")
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel("validation MSE")
    ax.set_ylim(min(mses) / 3, runs[0][2]["no_change_mse"] * 3)
    ax.set_title("Surrogate's validation error (lower is better)")
    ax.legend(loc="upper right", fontsize="small")

    ax = axes[1, 1]
    for (name, label, r), color in zip(runs, colors):
        losses = r["losses"]
        window = min(25, len(losses))
        if window:
            ax.plot(np.arange(window, len(losses) + 1), moving_average(losses, window), color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training step (batch of %d)" % runs[0][2]["batch_size"])
    ax.set_ylabel("training loss (mean of 25 steps)")
    ax.set_title("Training loss")
    ax.legend(loc="upper right", fontsize="small")

    producers = runs[0][2]["producers"]
    fig.suptitle(f"rdq demo (python -m rdq.demo --seconds {args.seconds:g}), the same wall time per case: "
                 f"{producers} simulation rank{'s' if producers > 1 else ''} and a trainer on a "
                 f"{os.cpu_count()}-core machine")
    fig.savefig(path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    print(f"{len(args.cases)} runs of {args.seconds:g} s of simulation, {args.ranks} ranks, on {platform.node()} "
          f"({os.cpu_count()} cores)", flush=True)
    reports, labels, p = {}, {}, args.sample_p
    started = time.perf_counter()
    order = sorted(args.cases, key=lambda name: name == "bernoulli" and args.sample_p is None)   # bernoulli last
    with tempfile.TemporaryDirectory(prefix="rdq-replay-compare-") as workdir:
        for name in order:
            label, extra = CASES[name]
            if name == "bernoulli":
                if p is None:
                    p, trainer_rate, sim_rate = calibrate(reports, args.margin)
                    print(f"  calibration: the FIFO trainer consumed {trainer_rate:.0f} rows/s, the simulations "
                          f"make {sim_rate:.0f} samples/s when they do not wait: p = {args.margin:g} x "
                          f"{trainer_rate:.0f} / {sim_rate:.0f} = {p:g}", flush=True)
                extra = extra + ["--sample-p", f"{p:g}"]
                label = label.format(p=p)
            if name in ("reservoir", "window"):
                extra = extra + ["--passes", f"{args.passes:g}"]
            reports[name], labels[name] = run_demo(args, name, extra, workdir), label
    runs = [(name, labels[name], reports[name]) for name in CASES if name in reports]
    print(f"total {time.perf_counter() - started:.0f} s\n")
    print(table(runs))
    plot(runs, args, args.png)
    print(f"\nfigure: {args.png}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: r for name, _, r in runs}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
