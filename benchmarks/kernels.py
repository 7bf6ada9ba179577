"""Benchmark of the pallas_kernels ops: ``python -m benchmarks.kernels [--help]`` from the repository root.

For every (backend, B, T, K) point it measures, for the gated delta rule (g given unless --no-gate) or, with
``--op mlstm``, the mLSTM: forward time, forward+backward time (gradient of a scalar loss w.r.t. every input:
q, k, v, beta and g, or q, k, v, i and f), tokens/s and the compiled temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``) of both programs. Times are the minimum over ``--reps``
runs after one warm-up run (the minimum is the least disturbed by other load on a shared machine). Prints a
table and writes JSON (default bench_results/kernels.json).

Points that would take unreasonably long are skipped and listed as such in the table and the JSON: the
token-serial reference when its per-token states (B*T*H*K*V*4 bytes, which its autodiff backward keeps; its
compiled temp memory is a multiple of that, see BENCHMARKS.md) exceed ``--max-reference-state-gb``, and, off
GPU, Pallas in interpret mode beyond ``--max-interpret-tokens`` (B*T).

``--fla`` (GPU only) also times flash-linear-attention's Triton ``chunk_gated_delta_rule`` (PyTorch) at
B=4, T=4096, H=16, K=V=128, bf16, next to this package's pallas backend and the reference at the same point,
and reports the ratio fla_time / pallas_time (>= 1 means pallas is at least as fast).
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

from pallas_kernels import delta_rule, dispatch, mlstm


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
    import torch
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


def _row(r):
    if "skipped" in r:
        return (
            f"{r['backend']:<10} {r['B']:>2} {r['T']:>5} {r['H']:>2} {r['K']:>4} {r['dtype']:<8} "
            f"skipped: {r['skipped']}"
        )
    return (
        f"{r['backend']:<10} {r['B']:>2} {r['T']:>5} {r['H']:>2} {r['K']:>4} {r['dtype']:<8} "
        f"{r['fwd_s'] * 1e3:>10.1f} {r['fwd_bwd_s'] * 1e3:>11.1f} {r['fwd_tok_s']:>11,.0f} "
        f"{r['fwd_bwd_tok_s']:>11,.0f} {_fmt_bytes(r['fwd_temp_bytes']):>10} "
        f"{_fmt_bytes(r['fwd_bwd_temp_bytes']):>11}"
    )


HEADER = (
    f"{'backend':<10} {'B':>2} {'T':>5} {'H':>2} {'K=V':>4} {'dtype':<8} {'fwd ms':>10} "
    f"{'fwd+bwd ms':>11} {'fwd tok/s':>11} {'f+b tok/s':>11} {'fwd MiB':>10} {'f+b MiB':>11}"
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
        help="skip Pallas in interpret mode (non-GPU) when B*T exceeds this",
    )
    p.add_argument(
        "--fla",
        action="store_true",
        help="GPU only: also time fla's chunk_gated_delta_rule at B=4,T=4096,H=16,K=V=128 bf16",
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
    )
    print(
        f"# {args.op}; jax {meta['jax']} on {platform_name} ({meta['device']}, {meta['cpu_count']} CPUs); "
        f"auto -> {meta['auto_backend']}; gated={meta['gated']}; chunk={args.chunk_size}"
    )
    print(HEADER)
    results = []

    def record(r):
        results.append(r)
        print(_row(r), flush=True)

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
                    elif concrete == "pallas" and not on_gpu and B * T > args.max_interpret_tokens:
                        r["skipped"] = f"pallas interpret mode with B*T={B * T} > --max-interpret-tokens"
                    else:
                        r.update(
                            bench_point(
                                backend, B, T, args.H, K, dtype, not args.no_gate, args.chunk_size, args.reps, args.op
                            )
                        )
                    record(r)

    if args.fla:
        if not on_gpu:
            print("--fla: skipped, needs a GPU (fla is Triton/CUDA only)")
            meta["fla"] = "skipped: no GPU"
        else:
            pt = dict(B=4, T=4096, H=16, K=128, V=128, dtype="bfloat16")
            fla = dict(backend="fla", **pt)
            try:
                fla.update(bench_fla(4, 4096, 16, 128, max(args.reps, 5)))
            except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark
                fla["skipped"] = f"fla failed: {type(e).__name__}: {e}"
            record(fla)
            ours = {}
            for backend in ("pallas", "reference"):
                r = dict(backend=backend, **pt)
                r.update(bench_point(backend, 4, 4096, 16, 128, jnp.bfloat16, True, args.chunk_size, max(args.reps, 5)))
                record(r)
                ours[backend] = r
            if "skipped" not in fla:
                meta["fla_ratio_fwd_bwd"] = fla["fwd_bwd_s"] / ours["pallas"]["fwd_bwd_s"]
                meta["fla_ratio_fwd"] = fla["fwd_s"] / ours["pallas"]["fwd_s"]
                print(
                    f"fla/pallas time ratio: fwd {meta['fla_ratio_fwd']:.2f}x, "
                    f"fwd+bwd {meta['fla_ratio_fwd_bwd']:.2f}x (>= 1 means pallas is at least as fast)"
                )

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
