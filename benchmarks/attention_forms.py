"""The two formulations of field self-attention, timed against each other.

:class:`msmtrec.layers.attention.FieldAttentionLayer` computes the same attention either the textbook way
(split heads) or factored (bilinear scores, value projection after the weighting, no layout copies); it
picks factored while ``heads × dim`` is at most ``FACTORED_MAX_WIDTH``. This prints, for one layer on
random input, the milliseconds per call of both forms: eager forward (inference mode), forward of a traced
and frozen TorchScript graph (what ``msmtrec serve`` runs) and eager forward + backward (training). The
forms are timed alternately, several rounds, and the best round is reported, so a noisy shared machine
affects both alike.

    python benchmarks/attention_forms.py --rows 1000 --fields 8 --dim 16 --heads 1 2 4
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch

from msmtrec.layers.attention import FieldAttentionLayer


def best_ms(fn: Callable[[], object], calls: int, rounds: int) -> float:
    """Best mean milliseconds per call over ``rounds`` rounds of ``calls`` calls (after a warm-up)."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e3)
    return best


def traced(layer: FieldAttentionLayer, x: torch.Tensor) -> torch.jit.ScriptModule:
    """The layer's output traced, frozen and optimised for inference, as the serving backend does."""

    class Output(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)[0]

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(Output().eval(), (x,), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(graph))


def time_forms(rows: int, fields: int, dim: int, heads: int, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call for each form (``factored``, ``split``) and each mode."""
    torch.manual_seed(0)
    layer = FieldAttentionLayer(dim, heads, dim // heads)
    x = torch.randn(rows, fields, dim)
    results: dict[str, dict[str, float]] = {"factored": {}, "split": {}}
    graphs = {}
    for form in results:
        layer.factored = form == "factored"
        graphs[form] = traced(layer, x)
    for _ in range(2):  # alternate the forms so drift in machine speed hits both
        for form, res in results.items():
            layer.factored = form == "factored"
            graph = graphs[form]

            def step() -> None:
                layer.zero_grad(set_to_none=True)
                layer(x)[0].sum().backward()

            with torch.inference_mode():
                timed = {"eager forward": best_ms(lambda: layer(x), calls, rounds),
                         "traced forward": best_ms(lambda: graph(x), calls, rounds)}  # noqa: B023 - called here
            timed["forward + backward"] = best_ms(step, max(calls // 3, 1), rounds)
            for mode, ms in timed.items():
                res[mode] = min(res.get(mode, float("inf")), ms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--dim", type=int, default=16, help="Embedding size (input and output per field).")
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.rows} rows x {args.fields} fields x {args.dim} dims, {args.threads} thread(s); "
          "ms per call, best round")
    print(f"{'heads':>5}  {'mode':<20}{'factored':>10}{'split':>10}{'ratio':>8}")
    for heads in args.heads:
        if args.dim % heads:
            raise SystemExit(f"--dim {args.dim} is not divisible by {heads} heads")
        res = time_forms(args.rows, args.fields, args.dim, heads, args.calls, args.rounds)
        default = "factored" if FieldAttentionLayer(args.dim, heads, args.dim // heads).factored else "split"
        for mode in res["split"]:
            f, s = res["factored"][mode], res["split"][mode]
            print(f"{heads:>5}  {mode:<20}{f:>10.2f}{s:>10.2f}{f / s:>8.2f}   (default: {default})")


if __name__ == "__main__":
    main()
