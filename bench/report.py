"""bench/run.py's results as Markdown tables and PNG plots.

Every ratio is rdq's figure (the first series: Python put/get on the shared-memory path)
against the other system's, oriented so that above 1 means rdq is better.
"""
import os
from pathlib import Path

KiB, MiB = 1 << 10, 1 << 20
SMALL = 64 * KiB     # below this a rate is shown in messages/s, from here on in GB/s
POSTER_MSG_PER_S = 2600


def size_label(size):
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def si(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def us(seconds):
    x = seconds * 1e6
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def pick(series, measure, **match):
    return [r for r in series["results"] if r["measure"] == measure
            and all(r.get(k) == v for k, v in match.items())]


def one(series, measure, **match):
    found = pick(series, measure, **match)
    return found[0] if found else None


def status(series, measure):
    """What a cell shows when a series has no figure for a measure."""
    if measure not in series["measures"]:
        return "—"
    if measure in series["unsupported"]:
        return "not measurable"
    return "not run" if series["problems"] else "missing"


def ratio(a, b):
    return f"{a / b:.3g}x" if a is not None and b else "—"


class Tables:
    def __init__(self, results):
        self.r = results
        self.series = results["series"]
        self.rdq = self.series[0]
        self.cfg = results["config"]

    def reference(self, s):
        """The rdq series a system is compared with: rdq (Python put/get, shared memory) on the same MPI."""
        for ref in self.series:
            if ref["system"] == "rdq" and not ref["env"] and ref["second_mpi"] == s["second_mpi"]:
                return ref
        return self.rdq

    def rate_cell(self, s, size):
        r = one(s, "rate", size=size)
        if r is None:
            return status(s, "rate")
        return f"{si(r['msg_per_s'])}/s" if size < SMALL else f"{r['GB_per_s']:.3g} GB/s"

    def rate(self):
        sizes = self.cfg["sizes"]
        head = "| system | " + " | ".join(size_label(x) for x in sizes) + " |"
        lines = ["### Message rate, 1 producer -> 1 consumer",
                 "", "Messages/s below 64 KiB, GB/s (1e9 bytes/s) from there on; the median of one trial per round, "
                 "the rounds interleaving all systems.", "",
                 head, "|---|" + "---:|" * len(sizes)]
        for s in self.series:
            lines.append(f"| {s['label']} | " + " | ".join(self.rate_cell(s, x) for x in sizes) + " |")
        lines += ["", "### rdq's rate over each system's (above 1: rdq is faster)", "",
                  "rdq here is Python put/get on the shared-memory path, on the same MPI as the system.", "",
                  head, "|---|" + "---:|" * len(sizes)]
        for s in self.series:
            if s["system"].startswith("rdq"):
                continue
            cells = []
            for x in sizes:
                a, b = one(self.reference(s), "rate", size=x), one(s, "rate", size=x)
                cells.append(ratio(a and a["msg_per_s"], b and b["msg_per_s"]) if b else status(s, "rate"))
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
        return lines

    def fanin(self):
        counts = self.cfg["fanin"]
        size = self.cfg["fanin_size"]
        lines = [f"### Many producers -> one consumer, {size_label(size)} messages",
                 "", f"Aggregate messages/s; {max(counts) + 1} ranks on {self.r['machine']['cpus']} cores "
                 "are oversubscribed. In brackets: rdq's rate over the system's.", "",
                 "| system | " + " | ".join(f"{p} producer{'s' if p > 1 else ''}" for p in counts) + " |",
                 "|---|" + "---:|" * len(counts)]
        for s in self.series:
            if "fanin" not in s["measures"]:
                continue
            cells = []
            for p in counts:
                r = one(s, "fanin", producers=p)
                ref = one(self.rdq, "fanin", producers=p)
                if r is None:
                    cells.append(status(s, "fanin"))
                elif s is self.rdq:
                    cells.append(f"{si(r['msg_per_s'])}/s")
                else:
                    cells.append(f"{si(r['msg_per_s'])}/s ({ratio(ref and ref['msg_per_s'], r['msg_per_s'])})")
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
        return lines

    def latency(self):
        sizes = self.cfg["latency_sizes"]
        lines = ["### Put latency, 1 producer, the consumer draining", "",
                 "Microseconds per put call: median / p99. In brackets: the system's median over rdq's.", "",
                 "| system | " + " | ".join(size_label(x) for x in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for s in self.series:
            if "latency" not in s["measures"]:
                continue
            cells = []
            for x in sizes:
                r, ref = one(s, "latency", size=x), one(self.rdq, "latency", size=x)
                if r is None:
                    cells.append(status(s, "latency"))
                    continue
                cell = f"{us(r['median_s'])} / {us(r['p99_s'])}"
                if s is not self.rdq and ref:
                    cell += f" ({ratio(r['median_s'], ref['median_s'])})"
                cells.append(cell)
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
        return lines

    def stall(self):
        c = self.cfg
        lines = [f"### Producer stall while the consumer computes for {c['busy']:g} s", "",
                 f"The producer puts {size_label(c['stall_size'])} messages at a steady pace, computing in between, "
                 "while the consumer sleeps, or sorts arrays with numpy, without touching the stream; then it "
                 "drains. Longest put in microseconds, and in brackets over the longest numpy copy of the "
                 "message in the same paced loop (one copy).", "",
                 "| system | consumer sleeps | consumer computes (numpy) | one copy |", "|---|---:|---:|---:|"]
        for s in self.series:
            if "stall" not in s["measures"]:
                continue
            cells, copy = [], None
            for mode in ("sleep", "numpy"):
                r = one(s, "stall", mode=mode)
                if r is None:
                    cells.append(status(s, "stall"))
                    continue
                copy = r["max_copy_s"]
                cells.append(f"{us(r['max_put_s'])} ({r['max_put_over_copy']:.3g}x)")
            lines.append(f"| {s['label']} | " + " | ".join(cells) + f" | {us(copy) if copy else '—'} |")
        return lines

    def memory(self):
        c = self.cfg
        lines = [f"### Receive-side memory for a {size_label(c['memory_total'])} stream of "
                 f"{size_label(c['memory_size'])} messages", "",
                 "Peak growth from before the stream was opened, in MiB: the consumer process's RSS, plus shared "
                 "memory made for the stream and not in that RSS (rdq's ring: the consumer maps its pages only as "
                 "it reads them), plus the server's RSS (Redis). Once with the consumer keeping up, once with it "
                 f"computing for {c['busy']:g} s before it drains, as a busy trainer does. In brackets: over rdq's.", "",
                 f"| system | consumer keeping up | consumer lagging {c['busy']:g} s | of which in the server "
                 "| stream time s (keeping up) |", "|---|---:|---:|---:|---:|"]

        def total(r):
            return r["consumer_peak_MiB"] + r["shared_MiB"] + (r["server_peak_MiB"] or 0)

        for s in self.series:
            if "memory" not in s["measures"]:
                continue
            cells = []
            for mode in ("keeping up", "lagging"):
                r, ref = one(s, "memory", consumer=mode), one(self.reference(s), "memory", consumer=mode)
                if r is None:
                    cells.append(status(s, "memory"))
                    continue
                note = f" ({ratio(total(r), total(ref))})" if s is not self.rdq and ref else ""
                cells.append(f"{total(r):.0f}{note}")
            lag, keep = one(s, "memory", consumer="lagging"), one(s, "memory", consumer="keeping up")
            server = f"{lag['server_peak_MiB']:.0f}" if lag and lag["server_peak_MiB"] is not None else "—"
            lines.append(f"| {s['label']} | {cells[0]} | {cells[1]} | {server} "
                         f"| {keep['seconds']:.2f} |" if keep else f"| {s['label']} | {cells[0]} | {cells[1]} | | |")
        return lines

    def problems(self):
        lines = ["### Not measured, or failed", ""]
        found = [f"- **{s['label']}**: " + "; ".join(
                     [p.replace("\n", " / ") for p in s["problems"]] +
                     [f"{measure} not measurable: {why}" for measure, why in s["unsupported"].items()])
                 for s in self.series if s["problems"] or s["unsupported"]]
        return lines + (found or ["Every system ran."])

    def targets(self):
        """The issue's targets, checked where this run measured both sides: for rdq's Python
        put/get, and at 64 B also for its fastest API (Cython put from a nogil loop, batch get)."""
        by_system = {}
        for s in self.series:
            if not s["second_mpi"] and not s["env"]:
                by_system.setdefault(s["system"], s)

        def rate(system, size):
            s = by_system.get(system)
            r = s and one(s, "rate", size=size)
            return r and r["msg_per_s"]

        def label(system):
            return by_system[system]["label"] if system in by_system else system

        checks = []
        goals = {64: [("sendrecv", 1.0), ("zmq-tcp", 20), ("redis", 50), ("adios2-sst", 100), ("poster", 100)],
                 8 * MiB: [("copy", 0.85), ("adios2-sst", 20), ("zmq-ipc", 1.0), ("zmq-tcp", 1.0), ("redis", 1.0),
                           ("redis-pipelined", 1.0)]}
        for size, size_goals in goals.items():
            for ours in ("rdq", "rdq-cython-batch") if size == 64 else ("rdq",):
                for system, goal in size_goals:
                    other = POSTER_MSG_PER_S if system == "poster" else rate(system, size)
                    name = (f"the RDQ poster's {POSTER_MSG_PER_S} msg/s" if system == "poster" else label(system))
                    mine = rate(ours, size)
                    got = mine / other if mine and other else None
                    checks.append((f"{size_label(size)}: {label(ours)} >= {goal:g}x {name}",
                                   f"{got:.3g}x" if got else "not measured", None if got is None else got >= goal))
        checks += self.network_targets()
        cython_batch = rate("rdq-cython-batch", 64)
        checks.append((f"64 B: {label('rdq-cython-batch')} >= 8 M msg/s",
                       f"{si(cython_batch)}/s" if cython_batch else "not measured",
                       None if cython_batch is None else cython_batch >= 8e6))
        ours, theirs = rate("rdq", 64), rate("sendrecv", 64)
        checks.append((f"64 B: {label('rdq')} >= 4x {label('sendrecv')}",
                       f"{ours / theirs:.3g}x" if ours and theirs else "not measured",
                       None if not (ours and theirs) else ours / theirs >= 4))
        for mode in ("sleep", "numpy"):
            r = one(self.rdq, "stall", mode=mode)
            name = (f"shm path, consumer {'sleeping' if mode == 'sleep' else 'computing'}: "
                    "longest put <= 2x one copy (at most one copy time of stall)")
            checks.append((name, f"{r['max_put_over_copy']:.3g}x" if r else "not measured",
                           r["max_put_over_copy"] <= 2 if r else None))
        lines = ["### Targets (this run)", "", "| target | measured | |", "|---|---:|---|"]
        for name, got, ok in checks:
            lines.append(f"| {name} | {got} | {'not measured' if ok is None else 'met' if ok else '**short**'} |")
        return lines, checks


    def network_targets(self):
        """The remote path's targets (issue 10): rdq against mpi4py Send/Recv on the same network
        path, on each MPI: rate, fan-in, and the longest put while the owner computes."""
        checks = []
        for second in (False, True):
            net = {s["system"]: s for s in self.series if s["env"] and s["second_mpi"] == second}
            if "rdq" not in net or "sendrecv" not in net:
                continue
            rdq, sendrecv = net["rdq"], net["sendrecv"]

            def versus(system, measure, goal, what, **match):
                a, b = one(net.get(system, {"results": []}), measure, **match), one(sendrecv, measure, **match)
                got = a["msg_per_s"] / b["msg_per_s"] if a and b else None
                name = net[system]["label"] if system in net else system
                checks.append((f"{what}: {name} >= {goal:g}x {sendrecv['label']}",
                               f"{got:.3g}x" if got else "not measured", None if got is None else got >= goal))

            fanin = dict(producers=max(self.cfg["fanin"]))
            versus("rdq", "rate", 0.5, "64 B", size=64)
            versus("rdq-more", "rate", 0.5, "64 B", size=64)
            versus("rdq-cython-batch", "rate", 1.0, "64 B (goal)", size=64)
            for size in (MiB, 8 * MiB):
                versus("rdq", "rate", 0.9, size_label(size), size=size)
            for system in ("rdq", "rdq-more"):
                versus(system, "fanin", 2.0, f"8 producers, {size_label(self.cfg['fanin_size'])}", **fanin)
            for mode in ("sleep", "numpy"):
                r = one(rdq, "stall", mode=mode)
                checks.append((f"{rdq['label']}, consumer {'sleeping' if mode == 'sleep' else 'computing'}: "
                               "longest put <= 10 ms", f"{r['max_put_s'] * 1e3:.3g} ms" if r else "not measured",
                               r["max_put_s"] <= 0.010 if r else None))
        return checks


def machine_lines(results):
    m = results["machine"]
    pk = m["packages"]
    return [f"- {m['cpus']} CPUs ({m['cpu']}), {m['memory_GiB']} GiB, Linux {m['kernel']}, Python {m['python']}",
            f"- MPI: {m['mpi']}" + (f"; second MPI: {m['second_mpi']}" if m["second_mpi"] else ""),
            "- " + ", ".join(f"{k} {v}" for k, v in pk.items() if v) + (f", {m['redis_server']}" if m["redis_server"] else ""),
            f"- rdq {m['commit']}, {m['date']}; profile `{results['profile']}`: {results['config']['repeats']} "
            f"round(s) of one ~{results['config']['seconds']} s trial per rate figure"]


BEGIN, END = "<!-- bench/run.py writes from here -->", "<!-- bench/run.py writes up to here -->"


def markdown(results, plot_path):
    t = Tables(results)
    target_lines, _ = t.targets()
    replay = []
    if results.get("replay"):   # bench/replay.py's measurements, when run.py ran them (--replay)
        from replay import tables as replay_tables
        replay = [*replay_tables(results["replay"]), ""]
    return "\n".join([f"## rdq benchmark ({results['profile']})", "", f"    {results['command']}", "",
                      *machine_lines(results), "", *target_lines, "", *t.rate(), "", f"![rate]({plot_path})", "",
                      *t.fanin(), "", *t.latency(), "", *t.stall(), "", *t.memory(), "", *replay,
                      *t.problems(), ""])


def write_report(results, out, update=None):
    """OUT/results.md and OUT/rate.png; with update, also the part of that Markdown file
    between the BEGIN and END marker lines (bench/RESULTS.md keeps its prose around them)."""
    out = Path(out)
    plot(results, out)
    (out / "results.md").write_text(markdown(results, "rate.png"))
    if update:
        update = Path(update)
        text = update.read_text()
        if BEGIN not in text or END not in text:
            raise ValueError(f"{update}: no {BEGIN!r} ... {END!r} lines to write between")
        plot_path = os.path.relpath(out / "rate.png", update.parent)
        head, rest = text.split(BEGIN, 1)
        update.write_text(f"{head}{BEGIN}\n{markdown(results, plot_path)}\n{END}{rest.split(END, 1)[1]}")


def plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [s for s in results["series"] if pick(s, "rate")]
    fig, (ax_rate, ax_bw) = plt.subplots(1, 2, figsize=(15, 5.5))
    colors = plt.get_cmap("tab20").colors   # 20 distinct colours: one per line
    for n, s in enumerate(series):
        points = sorted(pick(s, "rate"), key=lambda r: r["size"])
        sizes = [r["size"] for r in points]
        # rdq solid, the limit dashed, the others dotted
        style = dict(color=colors[n % len(colors)], marker="os^vD<>ph*"[n % 10], markersize=4,
                     linestyle="-" if s["system"].startswith("rdq") else "--" if s["system"] == "copy" else ":")
        ax_rate.plot(sizes, [r["msg_per_s"] for r in points], label=s["label"], **style)
        ax_bw.plot(sizes, [r["GB_per_s"] for r in points], label=s["label"], **style)
    for ax, name in ((ax_rate, "messages/s"), (ax_bw, "GB/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(name)
        ax.grid(True, which="major", alpha=0.3)
    ax_rate.set_title("message rate, 1 producer -> 1 consumer")
    ax_bw.set_title("bandwidth, 1 producer -> 1 consumer")
    ax_bw.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"rdq bench ({results['profile']}), {results['machine']['cpus']} cores, "
                 f"{results['machine']['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "rate.png", dpi=110)
    plt.close(fig)
