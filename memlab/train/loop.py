"""`train()`: build everything from a resolved config, then one flat loop that trains, evaluates, logs and
checkpoints; a workdir that already holds checkpoints is resumed.

Each iteration dispatches step n, then reads the metrics of step n-1, which has finished (or nearly) while step n
runs: the loop never waits on the step it just dispatched, except to evaluate or checkpoint it. A resumed run
starts from the newest readable checkpoint with the data iterator at the same position, so a killed and resumed
run ends with exactly the numbers of one that never stopped.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from memlab.config import diff, to_dict
from memlab.data.pipeline import (
    derived_eval_metrics,
    eval_batches,
    example_shapes,
    task_eval_metrics,
    tokens_per_example,
    train_iterator,
)
from memlab.errors import ConfigError
from memlab.models import build_model, count_params
from memlab.parallel import (
    create_sharded,
    logical_rules,
    make_mesh,
    param_shardings,
    parse_rules,
    replicated,
    shard_batch,
)
from memlab.train import curriculum
from memlab.train.checkpoint import Checkpointer
from memlab.train.flops import run_compute, xla_flops_per_token
from memlab.train.hardware import device_kind, peak_flops
from memlab.train.monitor import TrainProgress, WandbLogger, wandb_run_id
from memlab.train.partial import InitFrom, init_fresh_from_backbone, split_trainable, trainable_names
from memlab.train.run_dir import Compute, RunDir
from memlab.train.step import evaluate, make_eval_step, make_grad_fn, make_optimizer, make_train_step

log = logging.getLogger("memlab")


class StoppedEarly(RuntimeError):
    """A run that ends before its last step; `progress` (step, tokens, flops of the last good step) goes into its
    summary, so an analysis of the run directory sees how far it got."""

    def __init__(self, message: str, progress: dict):
        super().__init__(message)
        self.progress = progress


class NonFiniteError(StoppedEarly):
    """Loss or gradient norm became NaN/Inf."""

    status = "failed"


class Interrupted(StoppedEarly):
    """SIGTERM/SIGINT: the run checkpoints and stops; relaunching resumes it."""

    status = "interrupted"


# Keys a resume may change: provenance and display (a relaunched sweep has a new launch id), the mesh (a checkpoint
# restores onto any mesh; the numbers do not depend on it beyond float reduction order) and whether XLA's FLOP count
# is measured beside the analytic one (a measurement, not the run).
RESUME_MAY_DIFFER = ("logging.launch_id", "logging.progress", "mesh.", "train.xla_flops")


def _saved_chunk_len(saved: dict) -> int:
    """The chunk length a memory_model run saved before model.chunk_len used: its task's data.chunk_len (which the
    key follows), else its window split into its chunks (a memory probe on the text task)."""
    data, model = saved.get("data", {}), saved.get("model", {})
    if "chunk_len" in data:
        return data["chunk_len"]
    return data["seq_len"] // model["num_chunks"] if "seq_len" in data and model.get("num_chunks") else 64


# Keys added since runs were first saved, with the value that does what a run without them did: a saved config that
# lacks one (where the resumed config has it) is compared as if it held that value, so those runs still resume. A
# callable value derives it from the saved config (added_value), for a key that follows another.
ADDED_KEYS = {
    ("train", "warmup_fraction"): 0.0,
    ("train", "init_from"): "",
    ("train", "init_step"): -1,
    ("train", "init_map"): [],
    ("train", "trainable"): [],
    ("model", "attention_window"): 0,
    ("model", "attention_window_kind"): "sliding",
    ("model", "matrix_read"): "after",
    ("model", "delta_mem"): "",
    ("model", "delta_mem_rank"): 8,
    ("model", "delta_mem_alpha"): 16.0,
    ("model", "delta_mem_update"): "standard",
    ("model", "delta_mem_init"): "base_slice",
    ("model", "delta_mem_read"): "state",
    ("model", "delta_mem_beta_bias"): -1.5,
    ("model", "lora_rank"): 0,
    ("model", "lora_alpha"): 16.0,
    ("model", "memory"): "read",
    ("train", "curriculum_steps"): 0,
    ("train", "curriculum_objective"): {},
    ("model", "mixer"): "attn",
    ("model", "mixer_heads"): 1,
    ("model", "chunk_len"): _saved_chunk_len,
    ("model", "slow_text_gradient"): True,
    ("model", "slow_address"): "relu",
    ("model", "ttt_variant"): "delta",
    ("model", "ttt_base_lr"): 1.0,
    ("model", "ttt_minibatch"): 16,
    ("model", "titans_momentum"): False,
    ("model", "titans_depth"): 1,
    ("model", "titans_max_lr"): 1.0,
    # issue 30: titans and ttt_linear became their anchors; a run saved before ran memlab's earlier variants
    ("model", "ttt_inputs"): "matrix",
    ("model", "ttt_post_norm"): "rms_head",
    ("model", "ttt_lr_bias"): False,
    ("model", "titans_read"): "before",
    ("model", "titans_loss"): "half_sum",
    ("model", "titans_grad_batch"): 1,
    ("model", "titans_residual"): lambda saved: (
        "plain" if saved.get("model", {}).get("titans_depth", 1) > 1 else "none"
    ),
    ("model", "titans_gelu"): "tanh",
    ("model", "titans_block"): "matrix",
    ("model", "titans_init"): "normal",
    ("model", "titans_forget_bias"): -4.0,
}


def added_value(group: str, key: str, saved: dict):
    """What ADDED_KEYS[(group, key)] stands for in the saved config dict `saved` (one that lacks the key)."""
    value = ADDED_KEYS[(group, key)]
    return value(saved) if callable(value) else value


# Knobs only one mixer reads: a run whose layers use neither saved nor new value of that mixer resumes whatever they
# are (every LM config carries every mixer's knobs, so a changed titans default must not stop an attention run).
MIXER_KNOBS = {"titans": "model.titans_", "ttt_linear": "model.ttt_"}


def _unused_knob(key: str, existing: dict, config: dict) -> bool:
    used = {str(c.get("model", {}).get("mixers", "")) for c in (existing, config)}
    return any(key.startswith(prefix) and not any(m in u for u in used) for m, prefix in MIXER_KNOBS.items())


def check_resumable(run: RunDir, config: dict) -> None:
    """ConfigError if `run` holds a run of another config (one that `config` cannot resume)."""
    existing = run.read_config()
    if existing is None:
        return
    existing.pop("stamps", None)
    for group, key in ADDED_KEYS:
        saved = existing.get(group, {})
        if key in config.get(group, {}) and key not in saved:  # only where this config has it (model keys: families)
            saved[key] = added_value(group, key, existing)
    changed = [
        k
        for k in diff(existing, config)
        if not k.startswith(RESUME_MAY_DIFFER) and not _unused_knob(k, existing, config)
    ]
    if changed:
        raise ConfigError(
            f"{run.path} holds a run with a different config (differs in {', '.join(changed[:8])}); "
            "resume with the same config or use a new --workdir"
        )


class StopSignal:
    """SIGTERM/SIGINT handlers that only record the signal (in `received`); `restore` puts the old ones back."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {s: signal.signal(s, self._record) for s in (signal.SIGTERM, signal.SIGINT)}

    def _record(self, signum: int, _frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class HostMetrics:
    """The host side of the per-step metrics: each finished step is read once (a host sync on that step only),
    checked, and averaged into the next log row, with the window's throughput: tokens/s, and the achieved training
    FLOP/s per device (the analytic FLOPs of the window's steps over its wall time and the devices) and MFU (that
    over the device's peak, where `peak` is known). Time the loop spends evaluating or checkpointing is left out of
    the windows (`exclude`), so the rates are those of training; `train_seconds` sums the windows."""

    def __init__(
        self,
        train_config: ml_collections.ConfigDict,
        compute: Compute,
        checkpointer: Checkpointer,
        devices: int = 1,
        peak: float | None = None,
    ):
        self.log_every, self.steps = train_config.log_every, train_config.steps
        self.compute, self.checkpointer = compute, checkpointer
        self.devices, self.peak = devices, peak
        self.train_seconds, self.train_flops = 0.0, 0.0  # over this process's windows, for the summary's means
        self._new_window()

    def _new_window(self) -> None:
        self.sums, self.counts, self.count, self.t0, self.excluded = {}, {}, 0, time.perf_counter(), 0.0

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (spent on something other than training steps) out of the current window."""
        self.excluded += seconds

    def read(self, step: int, metrics: dict) -> dict:
        """Wait for `step`'s metrics and add them to the window; returns the log row if `step` is a logging step
        (and starts a new window), else {}. NonFiniteError if the step's loss or gradient is not finite."""
        metrics = jax.device_get(metrics)
        if not bool(metrics.pop("finite")):
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step} (loss={float(metrics['train/loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}); state not updated; last good checkpoint: "
                f"step {self.checkpointer.latest_step()}",
                self.compute.progress(step - 1),
            )
        for k, v in metrics.items():  # a window across a curriculum's switch has terms of both mixes
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1
        if step % self.log_every and step != self.steps:
            return {}
        elapsed = time.perf_counter() - self.t0 - self.excluded
        progress = self.compute.progress(step)
        row = {**progress, **{k: v / self.counts[k] for k, v in self.sums.items()}}
        if elapsed > 0:
            # the window's steps are (step - count, step]; Compute prices each at its phase's FLOPs per token
            flops = progress["flops"] - self.compute.progress(step - self.count)["flops"]
            self.train_seconds, self.train_flops = self.train_seconds + elapsed, self.train_flops + flops
            row["tokens_per_s"] = self.count * self.compute.tokens_per_step / elapsed
            row.update(self.rates(flops, elapsed))
        else:
            row["tokens_per_s"] = None
        self._new_window()
        return row

    def rates(self, flops: float, seconds: float) -> dict:
        """`tflops_per_s_per_device` of `flops` training FLOPs in `seconds`, and `mfu` where the peak is known."""
        per_device = flops / seconds / self.devices
        return {"tflops_per_s_per_device": per_device / 1e12, **({"mfu": per_device / self.peak} if self.peak else {})}

    def summary(self, previous: dict) -> dict:
        """The run's mean throughput for its summary: these windows' and, time-weighted, a resumed run's
        (`previous` summary) before them. Empty if no window was timed (nor before)."""
        seconds = previous.get("train_seconds") or 0.0
        if self.train_seconds <= 0:
            return {}
        now = self.rates(self.train_flops, self.train_seconds)
        total = seconds + self.train_seconds
        out = {"train_seconds": total}
        for key in ("tflops_per_s_per_device", "mfu"):
            before = previous.get(key) if seconds > 0 else 0.0
            known = key in now and before is not None
            out[key] = (before * seconds + now[key] * self.train_seconds) / total if known else None
        return out


class Evaluator:
    """The fixed eval set, placed on the mesh once, and the jit-compiled eval step: `evaluator(params)` gives the
    eval means (`eval/accuracy` is the first weighted objective's) and the task's metrics derived from them."""

    def __init__(self, config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, rules: dict):
        weights = dict(config.objective)
        self.eval_step = jax.jit(make_eval_step(graphdef, weights, task_eval_metrics(config)))
        self.batches = [shard_batch(b, mesh) for b in eval_batches(config)]
        self.primary = next(k for k, v in weights.items() if v > 0)
        self.derive = derived_eval_metrics(config)
        self.mesh, self.rules = mesh, rules

    def __call__(self, params) -> dict:
        with jax.set_mesh(self.mesh), logical_rules(self.rules):
            scores = evaluate(self.eval_step, params, self.batches, self.primary)
        return {**scores, **self.derive(scores)}


def _publish(row: dict, run: RunDir, logger: WandbLogger, bar: TrainProgress) -> None:
    """A log row (if any) to metrics.jsonl, W&B and the progress display."""
    if row:
        run.append_metrics(row)
        logger.log(row)
        bar.update(row["step"], row)


def _facts(config: ml_collections.ConfigDict, model: nnx.Module, per_example: int, compute: Compute, trainable) -> dict:
    """What the summary says of a run before it trains: its model's size (and how much of it trains) and its
    compute per example (of the objective, and of the curriculum's mix over its first steps if it has one)."""
    family = config.model.name + (f":{config.model.mixers}" if "mixers" in config.model else "")
    facts = {
        "steps": config.train.steps,
        "family": family,
        **count_params(model, trainable),
        "flops_per_token": compute.flops_per_token,
        "tokens_per_example": per_example,
        "flops_per_example": compute.flops_per_token * per_example,
    }
    if compute.curriculum_steps:
        facts["curriculum_flops_per_token"] = compute.curriculum_flops_per_token
    if hasattr(model, "state_size"):  # decoding memory per sequence, the x axis of Zoology's recall plots
        facts["state_size"] = model.state_size(example_shapes(config)["inputs"][-1])
    return facts


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train (or resume) the run in `workdir`; returns the final summary. Raises on failure after recording it."""
    t_start = time.perf_counter()
    tc = config.train
    is_main = jax.process_index() == 0
    run = RunDir(workdir, writer=is_main)  # every process sees the same workdir; process 0 writes it
    config_dict = to_dict(config)
    check_resumable(run, config_dict)

    # The model (abstract: shapes and logical axis names, no memory), the optimizer, the state sharded on the mesh.
    mesh, rules = make_mesh(config.mesh), parse_rules(config.mesh.rules)
    build = lambda: build_model(config.model, tc.seed)
    model = nnx.eval_shape(build)
    graphdef, abstract_params = nnx.split(model, nnx.Param)
    trainable = trainable_names(abstract_params, tc.trainable)  # None: everything trains
    # checked on shapes, nothing read yet
    init_from = InitFrom(tc, abstract_params, trainable) if tc.init_from else None
    tx, schedule = make_optimizer(tc)
    with jax.set_mesh(mesh):
        params = create_sharded(lambda: nnx.split(build(), nnx.Param)[1], param_shardings(abstract_params, mesh, rules))
        state = {
            "params": params,
            "opt_state": jax.jit(lambda p: tx.init(split_trainable(p, trainable)[0]))(params),
            "step": jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh)),
        }
    shardings = jax.tree.map(lambda x: x.sharding, state)

    # Resume from the newest readable checkpoint (the state lands in this mesh's shardings), or start afresh.
    data = train_iterator(config)
    checkpointer = Checkpointer(run.checkpoint_dir, keep=tc.keep_checkpoints)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = checkpointer.restore_latest(abstract_state, data)
    if restored is None:
        start, saved_wandb_id, previous = 0, None, {}
        run.start(config_dict)
        if init_from is not None:
            state["params"] = init_from.load(state["params"])
            if init_from.fresh and hasattr(model, "init_adapters_from_backbone"):  # e.g. base slices of new adapters
                with jax.set_mesh(mesh):
                    state["params"] = init_fresh_from_backbone(graphdef, state["params"], init_from.fresh)
            log.info("parameters of %d paths from %s (step %d)", len(init_from.sources), tc.init_from, init_from.step)
    else:
        start, state, meta = restored
        saved_wandb_id, previous = meta.get("wandb_run_id"), run.read_summary()
        run.trim_metrics(start)
        log.info("resuming %s from step %d", run.path, start)

    per_example = tokens_per_example(config)
    mixes = curriculum.mixes(config)
    compute = run_compute(config, model, trainable)
    fields = {
        **_facts(config, model, per_example, compute, trainable),
        "wandb_run_id": wandb_run_id(saved_wandb_id),
        "device_kind": device_kind(),
        "peak_flops_per_s_per_device": peak_flops(device_kind(), tc.precision),  # None: unknown device, no MFU
    }
    status, error, reached, measured, final = "running", None, compute.progress(start), {}, {}
    run.write_summary(previous, fields, status="running", progress=reached)

    stop, logger, host = StopSignal(), None, None
    try:
        logger = WandbLogger(config.logging, run.path, config_dict, fields["wandb_run_id"], is_main)
        train_steps = {
            phase: jax.jit(
                make_train_step(graphdef, weights, tx, schedule, tc.grad_accum, trainable),
                donate_argnums=0,
                out_shardings=(shardings, replicated(mesh)),
            )
            for phase, weights in mixes.items()
        }
        compiled = {}

        def step_fn(step: int):
            """The compiled step of `step`'s phase, compiled when first needed (a phase runs on one program)."""
            phase = curriculum.phase(config, step)
            if phase not in compiled:
                with jax.set_mesh(mesh), logical_rules(rules):
                    compiled[phase] = train_steps[phase].lower(state, batch).compile()
            return compiled[phase]

        evaluator = Evaluator(config, graphdef, mesh, rules)
        if start < tc.steps:
            batch = shard_batch(next(data), mesh)
            t0 = time.perf_counter()
            step_fn(start + 1)
            measured = {"compile_seconds": time.perf_counter() - t0}
            for phase, weights in mixes.items():
                if tc.xla_flops:  # off: the summary keeps what an earlier session measured, if any
                    prefix = "" if phase == curriculum.MAIN else "curriculum_"
                    measured[f"{prefix}flops_per_token_xla"] = xla_flops_per_token(
                        make_grad_fn(graphdef, weights, trainable), state["params"], batch, per_example, tc.grad_accum
                    )
            run.write_summary(previous, {**fields, **measured}, status="running", progress=reached)

            host = HostMetrics(tc, compute, checkpointer, jax.device_count(), fields["peak_flops_per_s_per_device"])
            unread = None
            with TrainProgress(run.path.name, tc.steps, start, config.logging.progress) as bar:
                if start == 0 and init_from is not None:  # the source run's parameters, before any step
                    _publish({**compute.progress(0), **evaluator(state["params"])}, run, logger, bar)
                for step in range(start + 1, tc.steps + 1):
                    batch = shard_batch(next(data), mesh) if batch is None else batch
                    state, metrics = step_fn(step)(state, batch)  # dispatched; runs while the host reads step n-1
                    # Read the stop flag once: a signal landing later in this iteration stops the next one, after
                    # its checkpoint.
                    stopping = stop.received is not None
                    evaluating = step % tc.eval_every == 0 or step == tc.steps
                    saving = step % tc.checkpoint_every == 0 or step == tc.steps or stopping
                    # Stage the next batch while this step runs, except before a checkpoint: the saved iterator
                    # position must be exactly `step` batches in.
                    batch = shard_batch(next(data), mesh) if not saving and step < tc.steps else None
                    if unread is not None:
                        _publish(host.read(step - 1, unread), run, logger, bar)
                    unread = metrics
                    if evaluating or saving:  # both need step n finished: read it now
                        row, unread = host.read(step, metrics), None
                        t_aside = time.perf_counter()  # evaluating and checkpointing are not training time
                        if evaluating:
                            row = {**compute.progress(step), **row, **evaluator(state["params"])}
                        _publish(row, run, logger, bar)
                    if saving:
                        checkpointer.save(step, state, data, {"wandb_run_id": logger.run_id, "step": step})
                    if evaluating or saving:
                        host.exclude(time.perf_counter() - t_aside)
                    if stopping:
                        raise Interrupted(
                            f"stopped by signal {stop.received} at step {step}; checkpoint saved, "
                            "relaunch the same command to resume",
                            compute.progress(step),
                        )
            final = {k: v for k, v in row.items() if k.startswith(("eval/", "train/"))}  # the last step's row
        status, reached = "completed", compute.progress(tc.steps)
    except StoppedEarly as err:
        status, error, reached = err.status, str(err), err.progress
        raise
    except Exception as err:
        status, error = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        stop.restore()
        checkpointer.close()
        wall_seconds = previous.get("wall_seconds", 0.0) + time.perf_counter() - t_start
        throughput = host.summary(previous) if host is not None else {}
        summary = run.write_summary(
            previous,
            {**fields, **measured, **throughput, **final},
            status=status,
            progress=reached,
            error=error,
            wall_seconds=wall_seconds,
        )
        if logger is not None:
            logger.summary(summary)
            logger.finish(exit_code=0 if status == "completed" else 1)
    return summary
