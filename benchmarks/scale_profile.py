"""Where one streamed training epoch spends its time: data, forward, backward, optimiser step (issue 17 target 6).

Runs the loop of ``benchmarks/scale_train.py`` (same model, loss, fused Adam, shuffle buffer) over the first
``--max-rows`` rows of simulated Parquet shards and times each phase of every step in CPU seconds of the
training thread (``time.thread_time``, which a busy shared machine disturbs far less than wall time):

- ``data``: getting the next batch on the training thread (shuffle-buffer and re-batch copies; the row-group
  decode and encoding run ``prefetch`` ahead in a background thread, whose CPU is ``prefetch_thread_cpu_s``:
  the process's CPU time less the training thread's);
- ``forward`` / ``backward`` / ``step`` (the optimiser, which updates the hashed id tables densely).

It also times the data path alone (the same stream, no model) so the two can be compared, and prints the
epoch's CPU time extrapolated to ``--epoch-rows`` rows (the epoch's wall time on an idle core)::

    python -m msmtrec data synth --rows 1000000 --out /tmp/syn1m
    python benchmarks/scale_profile.py --data /tmp/syn1m --max-rows 200000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from msmtrec.data.stream import ParquetStream, fit_preprocessor, row_groups
from msmtrec.models import build_model
from msmtrec.training.adam import FusedAdam


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="Folder of part-*.parquet (msmtrec data synth).")
    ap.add_argument("--model", default="hef")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--shuffle-buffer", type=int, default=200_000)
    ap.add_argument("--fit-rows", type=int, default=200_000)
    ap.add_argument("--max-rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epoch-rows", type=int, default=10_000_000, help="Rows to extrapolate the epoch time to.")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    files = sorted(str(p) for p in Path(args.data).glob("part-*.parquet"))
    pre = fit_preprocessor("synthetic", files, max_rows=args.fit_rows)
    stream = ParquetStream(row_groups(files), pre, shuffle_buffer=args.shuffle_buffer).limit(args.max_rows)

    # the data path alone
    w0, c0 = time.perf_counter(), time.process_time()
    rows = sum(int(b["labels"].shape[0]) for b in stream.batches(args.batch_size, shuffle=True, seed=0, epoch=0))
    data_only = {"rows": rows, "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}

    model = build_model(args.model, pre.schema)
    opt = FusedAdam([{"params": list(model.parameters())}], lr=1e-3)  # the trainer's optimiser, same kernel
    binary = [t.type == "binary" for t in pre.schema.tasks]
    phases = dict.fromkeys(("data", "forward", "backward", "step"), 0.0)
    model.train()
    seen, steps = 0, 0
    w0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    it = iter(stream.batches(args.batch_size, shuffle=True, seed=0, epoch=0))
    while True:
        t = time.thread_time()
        batch = next(it, None)
        phases["data"] += time.thread_time() - t
        if batch is None:
            break
        t = time.thread_time()
        out = model(batch)
        y = batch["labels"]
        losses = [
            F.binary_cross_entropy_with_logits(out[n], y[:, j]) if binary[j] else F.mse_loss(out[n], y[:, j])
            for j, n in enumerate(pre.schema.task_names)
        ]
        loss = torch.stack(losses).sum() + model.regularization_loss()
        phases["forward"] += time.thread_time() - t
        t = time.thread_time()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        phases["backward"] += time.thread_time() - t
        t = time.thread_time()
        opt.step()
        phases["step"] += time.thread_time() - t
        seen += int(y.shape[0])
        steps += 1
    wall, cpu, main_cpu = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - m0
    result = {
        "model": args.model, "parameters": model.num_parameters(), "rows": seen, "steps": steps,
        "batch_size": args.batch_size, "threads": args.threads,
        "data_path_alone": {**data_only, "rows_per_s": data_only["rows"] / data_only["wall_s"]},
        "train_wall_s": wall, "train_cpu_s": cpu, "training_thread_cpu_s": main_cpu,
        "prefetch_thread_cpu_s": cpu - main_cpu,
        "samples_per_wall_s": seen / wall, "samples_per_cpu_s": seen / cpu,
        "phase_cpu_share": {k: v / cpu for k, v in phases.items()},
        "phase_cpu_ms_per_step": {k: 1000 * v / max(steps, 1) for k, v in phases.items()},
        "extrapolated_epoch_cpu_s": args.epoch_rows / (seen / cpu),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": list(__import__("os").getloadavg()),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
