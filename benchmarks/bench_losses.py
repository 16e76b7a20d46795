"""Benchmark forward+backward of the 0.5*FKL + 0.5*RKL distillation loss on four paths.

Paths: ``naive`` (full logits, plain autograd), ``chunked`` (full logits, chunked custom Function),
``fused`` (:func:`arkd_env.losses.fused_linear_mixed_divergence`, logits never materialised) and
``trl`` (TRL's ``GKDTrainer.generalized_jsd_loss`` with beta=0.5 on full logits; skipped when TRL is
not installed). Every path starts from hidden states and LM-head weights, so the logits projection
and its gradient are part of every measurement.

Each case runs in a fresh subprocess so that peak memory is its own: on CPU the peak resident set
size (VmHWM, reset through /proc/self/clear_refs; ru_maxrss as a fall-back) minus the resident size
after the inputs exist; on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the
run. Time is the median wall time of ``--repeats`` runs after a small warm-up; the process CPU time
(all threads) is reported too, because it is far less sensitive to other jobs sharing the cores.

    python benchmarks/bench_losses.py            # full grid, CPU float32 (and CUDA bf16 if present)
    python benchmarks/bench_losses.py --quick    # N=1024 and N=4096 at V=49152 only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from arkd_env.losses import auto_chunk_size

RESULTS = Path(__file__).parent / "results" / "bench_losses.json"
METHODS = ("naive", "chunked", "fused", "trl")


# ----------------------------------------------------------------------------------------------
# Worker: one case in this process
# ----------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _gkd_trainer() -> Any:
    """TRL's ``GKDTrainer`` class: TRL 1.x moved it to ``trl.experimental.gkd``, older releases export it
    from ``trl``, and the TRL row should run against whichever is installed."""
    try:
        from trl.experimental.gkd import GKDTrainer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from trl import GKDTrainer  # type: ignore[import-not-found,unused-ignore,no-redef]
    return GKDTrainer


def _build_step(method: str, case: dict[str, Any]) -> Any:
    import torch

    from arkd_env.losses import fused_linear_mixed_divergence, mixed_divergence

    weights = [0.5, 0.5]

    def naive(hs: Any, w: Any, ht: Any, wt: Any, chunk: int | None) -> Any:
        logits = torch.nn.functional.linear(hs, w)
        with torch.no_grad():
            teacher = torch.nn.functional.linear(ht, wt)
        loss, _ = mixed_divergence(logits, teacher, weights, ("fkl", "rkl"), chunk_size=chunk)
        return loss

    if method == "naive":
        return lambda hs, w, ht, wt: naive(hs, w, ht, wt, None)
    if method == "chunked":
        return lambda hs, w, ht, wt: naive(hs, w, ht, wt, case["chunked_chunk"])
    if method == "fused":
        def fused(hs: Any, w: Any, ht: Any, wt: Any) -> Any:
            loss, _ = fused_linear_mixed_divergence(hs, w, ht, wt, weights, ("fkl", "rkl"),
                                                    chunk_size=case["fused_chunk"])
            return loss
        return fused
    if method == "trl":
        gkd_trainer = _gkd_trainer()

        def trl_step(hs: Any, w: Any, ht: Any, wt: Any) -> Any:
            logits = torch.nn.functional.linear(hs, w)
            with torch.no_grad():
                teacher = torch.nn.functional.linear(ht, wt)
            # TRL expects [batch, seq, vocab]
            return gkd_trainer.generalized_jsd_loss(logits.unsqueeze(0), teacher.unsqueeze(0), beta=0.5)
        return trl_step
    raise ValueError(f"unknown method {method!r}")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    n, v, h = case["n"], case["v"], case["h"]
    hs = (torch.randn(n, h, device=device) * 1.0).to(dtype).requires_grad_(True)
    w = (torch.randn(v, h, device=device) * h**-0.5 * 2).to(dtype).requires_grad_(True)
    ht = torch.randn(n, h, device=device).to(dtype)
    wt = (torch.randn(v, h, device=device) * h**-0.5 * 2).to(dtype)
    step = _build_step(case["method"], case)

    def once(rows: int | None = None) -> float:
        hs.grad = None
        w.grad = None
        a, b = (hs, ht) if rows is None else (hs[:rows].detach().requires_grad_(True), ht[:rows])
        loss = step(a, w, b, wt)
        loss.backward()
        return float(loss)

    once(rows=min(n, 64))  # warm-up: kernels, thread pools, lazy imports
    hs.grad = None
    w.grad = None
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_ok = _reset_peak_rss()
        rss_now = _proc_status_kb("VmRSS") if reset_ok else None
        # ru_maxrss is a process-lifetime peak, so without the reset the delta is only a lower bound.
        base_kb = rss_now if rss_now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times, loss_value = [], [], 0.0
    for _ in range(case["repeats"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss_value = once()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
        peak_kind = "cuda max_memory_allocated delta"
    else:
        hwm = _proc_status_kb("VmHWM") if reset_ok else None
        peak_kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = (peak_kb - base_kb) / 1024
        peak_kind = "RSS delta (VmHWM)" if hwm is not None else "RSS delta (ru_maxrss)"
    return {**case, "time_s": statistics.median(times), "times_s": times,
            "cpu_s": statistics.median(cpu_times), "peak_mb": peak_mb,
            "peak_kind": peak_kind, "loss": loss_value, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def _spawn(case: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**case, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**case, "error": f"exit {proc.returncode}: {tail[0]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| device | dtype | N | V | method | chunk | wall (s) | CPU (s) | peak mem (MiB) | wall / naive "
        "| CPU / naive | mem / naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    naive = {(r["device"], r["n"], r["v"]): r for r in results if r["method"] == "naive" and "error" not in r}
    for r in results:
        fused_chunk = r.get("fused_chunk") or f"auto ({auto_chunk_size(r['n'], r['v'], r['h'])})"
        chunk = {"chunked": r.get("chunked_chunk"), "fused": fused_chunk}.get(r["method"], "-")
        if "error" in r:
            lines.append(f"| {r['device']} | {r['dtype']} | {r['n']} | {r['v']} | {r['method']} | {chunk} | "
                         f"error: {r['error']} | | | | | |")
            continue
        ref = naive.get((r["device"], r["n"], r["v"]))
        t_ratio = f"{r['time_s'] / ref['time_s']:.2f}x" if ref else "-"
        c_ratio = f"{r['cpu_s'] / ref['cpu_s']:.2f}x" if ref else "-"
        m_ratio = f"{r['peak_mb'] / ref['peak_mb']:.3f}x" if ref and ref["peak_mb"] > 0 else "-"
        lines.append(f"| {r['device']} | {r['dtype']} | {r['n']} | {r['v']} | {r['method']} | {chunk} | "
                     f"{r['time_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mb']:.0f} | {t_ratio} | {c_ratio} "
                     f"| {m_ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 4096], help="token positions N")
    parser.add_argument("--v", type=int, nargs="+", default=[32000, 49152], help="vocabulary sizes V")
    parser.add_argument("--hidden", type=int, default=576, help="hidden size H of both models")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--fused-chunk", type=int, default=None,
                        help="token chunk of the fused path (default: the library's automatic choice)")
    parser.add_argument("--chunked-chunk", type=int, default=256, help="token chunk of the chunked path")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU float32, plus CUDA bfloat16 when a GPU is present")
    parser.add_argument("--quick", action="store_true", help="only V=49152 (N=1024 and 4096)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output file")
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return 0

    methods = list(args.methods)
    if "trl" in methods and importlib.util.find_spec("trl") is None:
        print("note: trl is not installed; skipping TRL generalized_jsd_loss (pip install trl to include it)")
        methods.remove("trl")
    import torch

    targets = []
    if args.device in ("auto", "cpu"):
        targets.append(("cpu", "float32"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        targets.append(("cuda", "bfloat16"))
    vocabs = [49152] if args.quick else args.v
    results = []
    for device, dtype in targets:
        for n in args.n:
            for v in vocabs:
                for method in methods:
                    case = {"method": method, "device": device, "dtype": dtype, "n": n, "v": v,
                            "h": args.hidden, "fused_chunk": args.fused_chunk,
                            "chunked_chunk": args.chunked_chunk, "repeats": args.repeats}
                    result = _spawn(case, args.timeout)
                    results.append(result)
                    status = result.get("error") or f"{result['time_s']:.3f} s, {result['peak_mb']:.0f} MiB"
                    print(f"{device} {dtype} N={n} V={v} {method}: {status}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "cpu_count": os.cpu_count()}, indent=2))
    print()
    print(_table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
