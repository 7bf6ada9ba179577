"""Benchmark of the pallas_kernels ops: ``python -m benchmarks.kernels [--help]`` from the repository root.

For every (backend, B, T, K) point it measures, for the gated delta rule (g given unless --no-gate) or, with
``--op mlstm``, the mLSTM: forward time, forward+backward time (gradient of a scalar loss w.r.t. every input:
q, k, v, beta and g, or q, k, v, i and f), tokens/s and the compiled temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``) of both programs. Times are the minimum over ``--reps``
runs after one warm-up run (the minimum is the least disturbed by other load on a shared machine). Prints a
table and writes JSON (default bench_results/kernels.json).

Throughput in FLOP terms: every measured row also carries the matmul FLOPs of the chunked algorithm at its point
(benchmarks/kernel_flops.py: forward, and forward + backward as model FLOPs, recomputation not counted), the
achieved TFLOP/s that gives, and the % of the device's peak dense FLOP/s for the row's dtype from
memlab.train.hardware (None in the JSON, "-" in the table, on a CPU or a device the table does not know). The
same model is used for every backend and for fla, so the figures compare work done per second; the token-serial
reference does other work and its TFLOP/s only restates its time. The chunked and pallas backends cast each chunk
to float32 whatever the input dtype, so a bfloat16 row's products run at a float32 (at best TF32) rate and its %
of the bfloat16 peak is capped by the TF32/bf16 ratio (1/2 on an H100 or H200).

Points that would take unreasonably long are skipped and listed as such in the table and the JSON: the
token-serial reference when its per-token states (B*T*H*K*V*4 bytes, which its autodiff backward keeps; its
compiled temp memory is a multiple of that, see BENCHMARKS.md) exceed ``--max-reference-state-gb``, and, on a
CPU (where the Pallas kernels are interpreted), Pallas beyond ``--max-interpret-tokens`` (B*T).

``--fla`` (GPU only) also times flash-linear-attention's Triton ``chunk_gated_delta_rule`` (PyTorch) at
B=4, T=4096, H=16, K=V=128, bf16, next to this package's backends at the same point (``--fla-backends``, default
pallas and the reference; a grid row already measured there is reused), and reports the ratio
fla_time / pallas_time (>= 1 means pallas is at least as fast). Without torch or fla the fla row is skipped as
"fla not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.kernel_flops import FLOPS, Flops
from memlab.train import hardware
from pallas_kernels import delta_rule, dispatch, mlstm

FLA_POINT = dict(B=4, T=4096, H=16, K=128, V=128, dtype="bfloat16")
FLA_CHUNK = 64  # fla's chunk_gated_delta_rule works in chunks of 64 tokens


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def _inputs(op, B, T, H, K, V, dtype, gated, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    k = f(B, T, H, K)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)  # L2-normalised keys, as a layer would pass them
    args = dict(q=jnp.asarray(f(B, T, H, K), dtype), k=jnp.asarray(k, dtype), v=jnp.asarray(f(B, T, H, V), dtype))
    if op == "mlstm":  # gate pre-activations: input gates around 0, forget gates around sigmoid(3)
        return dict(args, i=jnp.asarray(f(B, T, H), dtype), f=jnp.asarray(f(B, T, H) + 3.0, dtype))
    args["beta"] = jnp.asarray(1 / (1 + np.exp(-f(B, T, H))), dtype)
    if gated:
        args["g"] = jnp.asarray(-np.log1p(np.exp(f(B, T, H) - 2.0)), dtype)  # log-sigmoid-like decays
    return args


def _apply(op, x, chunk_size, backend):
    if op == "mlstm":
        return mlstm(x["q"], x["k"], x["v"], x["i"], x["f"], chunk_size=chunk_size, backend=backend)[0]
    return delta_rule(x["q"], x["k"], x["v"], x["beta"], g=x.get("g"), chunk_size=chunk_size, backend=backend)[0]


def _timings(tokens: int, t_f: float, t_fb: float, m_f: int | None, m_fb: int | None) -> dict:
    """One result row: forward and forward+backward seconds, tokens per second and temp bytes (None: unknown)."""
    return dict(
        fwd_s=t_f,
        fwd_bwd_s=t_fb,
        fwd_tok_s=tokens / t_f,
        fwd_bwd_tok_s=tokens / t_fb,
        fwd_temp_bytes=m_f,
        fwd_bwd_temp_bytes=m_fb,
    )


def _throughput(flops: Flops, t_f: float, t_fb: float, peak: float | None) -> dict:
    """The row's model FLOPs, achieved TFLOP/s and % of the peak (None where the device's peak is unknown)."""
    pct = lambda n, t: None if peak is None else 100 * n / t / peak
    return dict(
        fwd_flops=flops.fwd,
        fwd_bwd_flops=flops.fwd_bwd,
        fwd_tflops=flops.fwd / t_f / 1e12,
        fwd_bwd_tflops=flops.fwd_bwd / t_fb / 1e12,
        fwd_pct_peak=pct(flops.fwd, t_f),
        fwd_bwd_pct_peak=pct(flops.fwd_bwd, t_fb),
    )


def _timed(fn, args, reps):
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    temp = None if mem is None else int(mem.temp_size_in_bytes)
    jax.block_until_ready(compiled(*args))  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        ts.append(time.perf_counter() - t0)
    return min(ts), temp


def bench_point(
    backend: str,
    B: int,
    T: int,
    H: int,
    K: int,
    dtype: Any,
    gated: bool,
    chunk_size: int,
    reps: int,
    op: str = "delta_rule",
) -> dict[str, Any]:
    """Time forward and forward+backward of ``op`` on ``backend`` at one point (K = V)."""
    a = _inputs(op, B, T, H, K, K, dtype, gated)
    names = list(a)

    def fwd(*xs):
        return _apply(op, dict(zip(names, xs, strict=True)), chunk_size, backend)

    def loss(*xs):
        return jnp.sum(fwd(*xs).astype(jnp.float32) ** 2)

    grad = jax.grad(loss, argnums=tuple(range(len(names))))
    args = [a[n] for n in names]
    t_f, m_f = _timed(fwd, args, reps)
    t_fb, m_fb = _timed(grad, args, reps)
    return _timings(B * T, t_f, t_fb, m_f, m_fb)


def bench_fla(B: int = 4, T: int = 4096, H: int = 16, K: int = 128, reps: int = 10) -> dict[str, Any]:
    """Time fla's chunk_gated_delta_rule (torch, CUDA, bf16) forward and forward+backward."""
    import torch  # absent on a CPU-only install: the caller reports "fla not installed"
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=dev, generator=gen, dtype=torch.float32)
    q = r(B, T, H, K).to(torch.bfloat16).requires_grad_()
    k = torch.nn.functional.normalize(r(B, T, H, K), dim=-1).to(torch.bfloat16).requires_grad_()
    v = r(B, T, H, K).to(torch.bfloat16).requires_grad_()
    beta = torch.sigmoid(r(B, T, H)).to(torch.bfloat16).requires_grad_()
    g = torch.nn.functional.logsigmoid(r(B, T, H) - 2.0).to(torch.float32).requires_grad_()

    def fwd():
        return chunk_gated_delta_rule(q, k, v, g=g, beta=beta, scale=K**-0.5)[0]

    def fwd_bwd():
        o = fwd()
        o.float().pow(2).sum().backward()

    def timeit(fn):
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    with torch.no_grad():
        t_f = timeit(fwd)
    t_fb = timeit(fwd_bwd)
    return _timings(B * T, t_f, t_fb, None, None)


def _fmt_bytes(b):
    return "-" if b is None else f"{b / 2**20:,.1f}"


def _fmt_pct(p):
    return "-" if p is None else f"{p:.1f}"


def format_row(r: dict[str, Any]) -> str:
    """One result row as a line of the printed table."""
    if "skipped" in r:
        return (
            f"{r['backend']:<10} {r['B']:>2} {r['T']:>5} {r['H']:>2} {r['K']:>4} {r['dtype']:<8} "
            f"skipped: {r['skipped']}"
        )
    return (
        f"{r['backend']:<10} {r['B']:>2} {r['T']:>5} {r['H']:>2} {r['K']:>4} {r['dtype']:<8} "
        f"{r['fwd_s'] * 1e3:>10.1f} {r['fwd_bwd_s'] * 1e3:>11.1f} {r['fwd_tok_s']:>11,.0f} "
        f"{r['fwd_bwd_tok_s']:>11,.0f} {_fmt_bytes(r['fwd_temp_bytes']):>10} "
        f"{_fmt_bytes(r['fwd_bwd_temp_bytes']):>11} {r['fwd_tflops']:>9.3g} {r['fwd_bwd_tflops']:>9.3g} "
        f"{_fmt_pct(r['fwd_pct_peak']):>7} {_fmt_pct(r['fwd_bwd_pct_peak']):>7}"
    )


HEADER = (
    f"{'backend':<10} {'B':>2} {'T':>5} {'H':>2} {'K=V':>4} {'dtype':<8} {'fwd ms':>10} "
    f"{'fwd+bwd ms':>11} {'fwd tok/s':>11} {'f+b tok/s':>11} {'fwd MiB':>10} {'f+b MiB':>11} "
    f"{'fwd TF/s':>9} {'f+b TF/s':>9} {'fwd %pk':>7} {'f+b %pk':>7}"
)


def _bench_fla_row(reps: int) -> dict[str, Any]:
    """fla's row at FLA_POINT, or a skipped row saying why (no torch or fla, or fla failing)."""
    row = dict(backend="fla", **FLA_POINT)
    try:
        row.update(bench_fla(FLA_POINT["B"], FLA_POINT["T"], FLA_POINT["H"], FLA_POINT["K"], reps))
    except ModuleNotFoundError as e:
        row["skipped"] = f"fla not installed ({e})"
    except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark
        row["skipped"] = f"fla failed: {type(e).__name__}: {e}"
    return row


def _grid_row_at_fla_point(results, backend, args) -> dict[str, Any] | None:
    """A row of the grid measured at FLA_POINT on ``backend`` with the gated delta rule, or None."""
    if args.op != "delta_rule" or args.no_gate:
        return None
    at = lambda r: r["backend"] == backend and "skipped" not in r and all(r[n] == v for n, v in FLA_POINT.items())
    return next((r for r in results if at(r)), None)


def _fla_comparison(args, on_gpu, results, record, meta) -> None:
    """--fla: fla's row and this package's --fla-backends at FLA_POINT, and the fla/pallas time ratios in meta."""
    if not on_gpu:
        print("--fla: skipped, needs a GPU (fla is Triton/CUDA only)")
        meta["fla"] = "skipped: no GPU"
        return
    reps = max(args.reps, 5)
    fla = _bench_fla_row(reps)
    record(fla, op="delta_rule", chunk=FLA_CHUNK)
    meta["fla"] = fla.get("skipped", "measured")
    ours = {}
    for backend in args.fla_backends.split(","):
        ours[backend] = _grid_row_at_fla_point(results, backend, args)
        if ours[backend] is None:
            r = dict(backend=backend, **FLA_POINT)
            r.update(bench_point(backend, *(FLA_POINT[n] for n in "BTHK"), jnp.bfloat16, True, args.chunk_size, reps))
            record(r, op="delta_rule")
            ours[backend] = r
    if "skipped" not in fla and "pallas" in ours:
        meta["fla_ratio_fwd_bwd"] = fla["fwd_bwd_s"] / ours["pallas"]["fwd_bwd_s"]
        meta["fla_ratio_fwd"] = fla["fwd_s"] / ours["pallas"]["fwd_s"]
        print(
            f"fla/pallas time ratio: fwd {meta['fla_ratio_fwd']:.2f}x, "
            f"fwd+bwd {meta['fla_ratio_fwd_bwd']:.2f}x (>= 1 means pallas is at least as fast)"
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the flags, run the grid (and --fla), print the table and write the JSON; returns the rows."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.kernels", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--op", default="delta_rule", choices=["delta_rule", "mlstm"])
    p.add_argument("--backends", default="reference,chunked,pallas,auto")
    p.add_argument("--B", default="1,8", type=_ints)
    p.add_argument("--T", default="512,2048,8192", type=_ints)
    p.add_argument("--H", default=8, type=int)
    p.add_argument("--K", default="64,128", type=_ints, help="head dims (K = V)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-gate", action="store_true", help="benchmark without the log-decay g")
    p.add_argument("--chunk-size", default=64, type=int)
    p.add_argument("--reps", default=3, type=int)
    p.add_argument(
        "--max-reference-state-gb",
        default=2.2,
        type=float,
        help="skip the token-serial reference when its per-token states B*T*H*K*V*4 bytes exceed "
        "this many GB (its backward keeps them all; compiled temp is a multiple of that)",
    )
    p.add_argument(
        "--max-interpret-tokens",
        default=512,
        type=int,
        help="on a CPU, skip Pallas (interpreted there) when B*T exceeds this",
    )
    p.add_argument(
        "--fla",
        action="store_true",
        help="GPU only: also time fla's chunk_gated_delta_rule at B=4,T=4096,H=16,K=V=128 bf16",
    )
    p.add_argument(
        "--fla-backends",
        default="pallas,reference",
        help="with --fla: this package's backends timed at fla's point (pallas is needed for the ratio)",
    )
    p.add_argument("--out", default="bench_results/kernels.json")
    args = p.parse_args(argv)

    platform_name = jax.default_backend()
    on_gpu = platform_name == "gpu"
    dtype = jnp.dtype(args.dtype)
    meta = dict(
        command="python -m benchmarks.kernels " + " ".join(sys.argv[1:] if argv is None else argv),
        jax=jax.__version__,
        platform=platform_name,
        device=str(jax.devices()[0].device_kind),
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        processor=platform.processor(),
        op=args.op,
        auto_backend=dispatch.auto_backend(),
        gated=not args.no_gate,
        chunk_size=args.chunk_size,
        reps=args.reps,
        time="min over reps after one warm-up",
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        accelerator=hardware.accelerator(jax.devices()[0].device_kind),
        peak_flops={d: hardware.peak_flops(jax.devices()[0].device_kind, d) for d in (hardware.BF16, hardware.FP32)},
        flop_model="matmul FLOPs of the chunked algorithm, benchmarks/kernel_flops.py; fwd_bwd: model FLOPs",
    )
    print(
        f"# {args.op}; jax {meta['jax']} on {platform_name} ({meta['device']}, {meta['cpu_count']} CPUs); "
        f"auto -> {meta['auto_backend']}; gated={meta['gated']}; chunk={args.chunk_size}"
    )
    print(HEADER)
    results = []

    def record(r, op=args.op, chunk=args.chunk_size):
        if "skipped" not in r:
            flops = FLOPS[op](r["B"], r["T"], r["H"], r["K"], r["V"], chunk)
            r.update(_throughput(flops, r["fwd_s"], r["fwd_bwd_s"], meta["peak_flops"].get(r["dtype"])))
        results.append(r)
        print(format_row(r), flush=True)

    for K in args.K:
        for B in args.B:
            for T in args.T:
                for backend in args.backends.split(","):
                    r = dict(backend=backend, B=B, T=T, H=args.H, K=K, V=K, dtype=dtype.name)
                    concrete = dispatch.auto_backend() if backend == "auto" else backend
                    state_gb = B * T * args.H * K * K * 4 / 1e9
                    if concrete == "reference" and state_gb > args.max_reference_state_gb:
                        r["skipped"] = (
                            f"reference per-token states {state_gb:.1f} GB > "
                            f"--max-reference-state-gb={args.max_reference_state_gb}"
                        )
                    elif concrete == "pallas" and platform_name == "cpu" and B * T > args.max_interpret_tokens:
                        r["skipped"] = f"pallas interpret mode with B*T={B * T} > --max-interpret-tokens"
                    else:
                        r.update(
                            bench_point(
                                backend, B, T, args.H, K, dtype, not args.no_gate, args.chunk_size, args.reps, args.op
                            )
                        )
                    record(r)

    if args.fla:
        _fla_comparison(args, on_gpu, results, record, meta)

    # Headline comparison: auto against the reference at each point where both ran.
    by = {(r["backend"], r["B"], r["T"], r["K"]): r for r in results if "skipped" not in r}
    for (be, B, T, K), r in sorted(by.items()):
        ref = by.get(("reference", B, T, K))
        if be == "auto" and ref:
            sp = ref["fwd_bwd_s"] / r["fwd_bwd_s"]
            mem = (ref["fwd_bwd_temp_bytes"] / r["fwd_bwd_temp_bytes"]) if r["fwd_bwd_temp_bytes"] else None
            line = f"auto vs reference at B={B} T={T} K=V={K}: fwd+bwd {sp:.2f}x faster"
            if mem:
                line += f", {mem:.1f}x less temp memory"
            print(line)
            meta.setdefault("auto_vs_reference", []).append(
                dict(B=B, T=T, K=K, speedup_fwd_bwd=sp, temp_memory_ratio_fwd_bwd=mem)
            )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
