"""The demo's outputs: the report the trainer prints, and the PNG."""
import numpy as np
from matplotlib.figure import Figure   # a bare Figure draws with Agg: no GUI backend, no pyplot state

from rdq.demo.heat import diffusivity


BUFFER_NAMES = {"fifo": "FIFO queue", "reservoir": "reservoir replay buffer", "window": "window replay buffer"}


def run_length(r):
    """'12000 steps' or '30 s (250000 steps)': how long each simulation ran."""
    if r["seconds"] is None:
        return f"{r['steps_per_producer']} steps"
    return f"{r['seconds']:g} s ({r['steps_per_producer']} steps)"


def format_report(r):
    """The report dict (what --json writes) as lines for the terminal."""
    fifo = r["buffer"] == "fifo"
    lines = [
        f"simulation: {r['producers']} rank(s) x {run_length(r)} of the {r['grid']}x{r['grid']} heat equation, "
        f"{r['messages_produced']} samples produced in {r['simulation_seconds']:.1f} s; "
        f"{r['producer_put_fraction']:.0%} of their time in put() " +
        (f"(waiting for free slots {r['full_waits']} times)" if fifo else "(a replay buffer's put never waits)"),
    ]
    if fifo:
        lines += [
            f"stream ({BUFFER_NAMES['fifo']}, {r['capacity']} slots per producer): {r['messages_received']} "
            f"messages ({r['bytes_received'] / 1e6:.1f} MB) received, {r['messages_sampled_out']} sampled out on "
            f"the producers (p = {r['sample_p']:g}); {r['batches']} batches, {r['batch_copies']} of them copied",
            f"throughput: {r['messages_per_second']:.0f} messages/s, {r['megabytes_per_second']:.1f} MB/s "
            f"over {r['stream_seconds']:.1f} s of streaming ({r['transport']} transport); "
            f"wall time {r['wall_seconds']:.1f} s",
        ]
    else:
        skipped = f"{r['messages_skipped']} skipped by the reservoir, " if r["buffer"] == "reservoir" else ""
        lines += [
            f"buffer ({BUFFER_NAMES[r['buffer']]}, {r['capacity']} slots per producer): {r['messages_inserted']} "
            f"messages ({r['bytes_inserted'] / 1e6:.1f} MB) written into it, {skipped}"
            f"{r['messages_evicted']} overwritten; {r['resident']} resident at the end",
            f"throughput into the buffer: {r['messages_per_second']:.0f} messages/s, "
            f"{r['megabytes_per_second']:.1f} MB/s over {r['simulation_seconds']:.1f} s of simulation "
            f"({r['transport']} transport); training {r['stream_seconds']:.1f} s; wall time {r['wall_seconds']:.1f} s",
        ]
    if r["final_train_loss"] is None:
        lines.append("training: no messages arrived; the model stayed untrained")
    elif fifo:
        lines.append(f"training: {r['batches']} steps on {r['messages_trained_on']} messages, each once; "
                     f"final loss {r['final_train_loss']:.3e} (mean of the last {r['final_loss_steps']})")
    else:
        lines.append(
            f"training: {r['batches']} steps ({r['training_steps_after_end']} of them after the simulations "
            f"ended: {r['passes']:g} pass{'' if r['passes'] == 1 else 'es'} over the buffer) on "
            f"{r['messages_trained_on']} sampled rows, "
            f"{r['distinct_messages_trained_on']} distinct messages ("
            f"{r['messages_trained_on'] / max(1, r['distinct_messages_trained_on']):.2f} draws each; those "
            f"resident at the end drawn {r['reuse']:.2f} times on average); final loss "
            f"{r['final_train_loss']:.3e} (mean of the last {r['final_loss_steps']})")
    lines.append(
        f"validation on {r['validation_samples']} fresh samples: model MSE {r['validation_mse']:.3e}, "
        f"no-change MSE {r['no_change_mse']:.3e}, ratio {r['mse_ratio']:.3f}")
    return "\n".join(lines)


def moving_average(values, window):
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def write_png(path, losses, sample, prediction, r):
    """Loss curve on top; below, one validation sample: input, simulated and predicted
    fields, and the prediction's error.  `sample` is (3, n, n), `prediction` (n, n)."""
    fig = Figure(figsize=(13, 7), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.15])

    ax = fig.add_subplot(grid[0, :])
    if losses:
        steps = np.arange(1, len(losses) + 1)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="training loss (per batch)")
        window = min(25, len(losses))
        ax.plot(steps[window - 1:], moving_average(losses, window), color="tab:blue",
                label=f"training loss (mean of {window})")
    ax.axhline(r["no_change_mse"], color="gray", ls="--", label="validation: no-change baseline")
    ax.axhline(r["validation_mse"], color="tab:green", ls="--", label="validation: model")
    ax.set_yscale("log")
    fifo = r["buffer"] == "fifo"
    ax.set_xlabel("training step (one zero-copy batch from the queue)" if fifo else
                  "training step (one batch sampled from the replay buffer)")
    ax.set_ylabel("mean squared error")
    trained = (f"{r['messages_trained_on']} trained on, each once" if fifo else
               f"{r['messages_trained_on']} rows trained on, {r['distinct_messages_trained_on']} distinct "
               f"(reuse {r['reuse']:.2f})")
    sampling = f" (p = {r['sample_p']:g})" if fifo else ""
    ax.set_title(f"In-situ training through a {BUFFER_NAMES[r['buffer']]}{sampling}: "
                 f"{r['messages_produced']} samples from {r['producers']} simulation rank(s) in "
                 f"{r['simulation_seconds']:.1f} s, {r['producer_put_fraction']:.0%} of their time in put; "
                 f"{trained}\nvalidation MSE / no-change MSE = {r['mse_ratio']:.3f}")
    ax.legend(loc="upper right")

    horizon = r["horizon"]
    state, target = sample[0], sample[2]
    limit = np.abs(np.stack([state, target, prediction])).max()
    error = prediction - target
    error_limit = np.abs(error).max()
    panels = [
        (state, limit, f"input $u_t$ (diffusivity {diffusivity(sample):.3f})"),
        (target, limit, f"simulated $u_{{t+{horizon}}}$"),
        (prediction, limit, f"predicted $u_{{t+{horizon}}}$"),
        (error, error_limit, "prediction - simulation"),
    ]
    for column, (field, lim, title) in enumerate(panels):
        ax = fig.add_subplot(grid[1, column])
        image = ax.imshow(field, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
