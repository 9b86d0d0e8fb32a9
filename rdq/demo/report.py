"""The demo's outputs: the report the trainer prints, and the PNG."""
import numpy as np
from matplotlib.figure import Figure   # a bare Figure draws with Agg: no GUI backend, no pyplot state

from rdq.demo.heat import diffusivity


def format_report(r):
    """The report dict (what --json writes) as lines for the terminal."""
    lines = [
        f"simulation: {r['producers']} rank(s) x {r['steps_per_producer']} steps of the {r['grid']}x{r['grid']} "
        f"heat equation; {r['producer_put_fraction']:.0%} of their time in put() (waiting for free slots "
        f"{r['full_waits']} times)",
        f"stream: {r['messages_received']} messages ({r['bytes_received'] / 1e6:.1f} MB) received, "
        f"{r['messages_sampled_out']} sampled out on the producers (p = {r['sample_p']:g}); "
        f"{r['batches']} batches, {r['batch_copies']} of them copied",
        f"throughput: {r['messages_per_second']:.0f} messages/s, {r['megabytes_per_second']:.1f} MB/s "
        f"over {r['stream_seconds']:.1f} s of streaming ({r['transport']} transport); "
        f"wall time {r['wall_seconds']:.1f} s",
    ]
    if r["final_train_loss"] is None:
        lines.append("training: no messages arrived; the model stayed untrained")
    else:
        lines.append(f"training: {r['batches']} steps, final loss {r['final_train_loss']:.3e} "
                     f"(mean of the last {r['final_loss_steps']})")
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
    ax.set_xlabel("training step (one zero-copy batch from the queue)")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"In-situ training: {r['messages_received']} messages from {r['producers']} simulation "
                 f"rank(s) in {r['stream_seconds']:.1f} s; validation MSE / no-change MSE = "
                 f"{r['mse_ratio']:.3f}")
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
