"""Per-step time of one /v1/rank request in-process (no HTTP): parse, validate, plan, encode, model, page,
response; median and minimum over ``--repeats`` requests after 10 warm-up ones, one torch thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serving_steps.py --format columns [--distinct]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serving import make_payloads  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hef")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--format", default="columns", choices=["rows", "columns"], dest="form")
    ap.add_argument("--distinct", action="store_true", help="Every candidate a distinct row (see load_serving).")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args(argv)

    import torch

    from msmtrec.serving import app
    from msmtrec.serving.schemas import RankRequest, parse_json
    from msmtrec.serving.scorer import Scorer
    from msmtrec.serving.testing import make_run_dir

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.load(make_run_dir(Path(tmp) / args.model, args.model, overrides={}))
    scorer.use_torchscript()
    scorer.warm_up()
    service = app.Service.load(scorer)
    payloads = make_payloads(args.candidates, form=args.form, distinct=args.distinct)
    names = ("parse", "validate", "plan", "encode", "model", "page", "response", "total")
    steps: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(args.repeats + 10):
        body = payloads[rep % len(payloads)]
        t = [time.perf_counter()]
        payload = parse_json(body, None, service.limits)
        t.append(time.perf_counter())
        req = RankRequest.model_validate(payload)
        t.append(time.perf_counter())
        plan = app.plan_rank(service, req)
        t.append(time.perf_counter())
        batch, report = app.encode_rank(service, req, plan)
        t.append(time.perf_counter())
        preds = app.score_batch(service, batch, ["body"])
        t.append(time.perf_counter())
        page = app.rank_page(plan, preds)
        t.append(time.perf_counter())
        app.rank_response(service, req, plan, page, preds, report, batch)
        t.append(time.perf_counter())
        if rep >= 10:
            for k, a, b in zip(names, t, t[1:], strict=False):
                steps[k].append(1e3 * (b - a))
            steps["total"].append(1e3 * (t[-1] - t[0]))
    print(f"{args.model}, {args.candidates} candidates as {args.form}, "
          f"{'distinct' if args.distinct else 'repeating'} rows; ms, median / min over {args.repeats}:")
    for k, v in steps.items():
        print(f"  {k:9s} {statistics.median(v):7.2f} / {min(v):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
