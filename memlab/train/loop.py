"""`memlab train`: build everything from a resolved config, train, evaluate, log, checkpoint, resume.

The loop never waits on the device for the step it just dispatched: it reads the metrics of step n-1 while step
n runs (the only host syncs are that read, evals and checkpoints). A workdir that already holds checkpoints is
resumed from the newest readable one, with the data iterator at the same position, so a killed and resumed run
ends with exactly the numbers of one that never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.config import ConfigError, diff, to_dict
from memlab.data.pipeline import derived_eval_metrics, eval_batches, example_shapes, tokens_per_example, train_iterator
from memlab.models import build_model, count_params
from memlab.parallel import (create_sharded, logical_rules, make_mesh, param_shardings, parse_rules, replicated,
                             shard_batch)
from memlab.train.checkpoint import Checkpointer
from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
from memlab.train.optimizer import make_optimizer
from memlab.train.progress import TrainProgress
from memlab.train.run_dir import RunDir
from memlab.train.stamps import stamps
from memlab.train.steps import evaluate, make_eval_step, make_loss_fn, make_train_step
from memlab.train.wandb_logger import WandbLogger

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


# Keys a resume may change: provenance and display (a relaunched sweep has a new launch id), and the mesh (a
# checkpoint restores onto any mesh; the numbers do not depend on it beyond float reduction order).
RESUME_MAY_DIFFER = ("logging.launch_id", "logging.progress", "mesh.")


def family(model_config) -> str:
    return f"{model_config.name}:{model_config.mixers}" if "mixers" in model_config else model_config.name


def _check_same_config(run: RunDir, config_dict: dict) -> None:
    existing = run.read_config()
    if existing is None:
        return
    existing.pop("stamps", None)
    changed = [k for k in diff(existing, config_dict) if not k.startswith(RESUME_MAY_DIFFER)]
    if changed:
        raise ConfigError(f"{run.path} holds a run with a different config (differs in {', '.join(changed[:8])}); "
                          "resume with the same config or use a new --workdir")


class _Interval:
    """Host-side accumulation of per-step metrics between two log rows."""

    def __init__(self):
        self.sums, self.count, self.t0 = {}, 0, time.perf_counter()

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def rate(self, tokens_per_step: int) -> float | None:
        elapsed = time.perf_counter() - self.t0
        return self.count * tokens_per_step / elapsed if elapsed > 0 else None


@dataclasses.dataclass
class Session:
    """Everything one training session works with, built once by `train` and used by the step loop."""

    config: Any
    run: RunDir
    checkpointer: Checkpointer
    logger: WandbLogger
    data: Any                       # checkpointable grain iterator of training batches (this host's share)
    mesh: Any
    rules: dict                     # logical axis name -> mesh axes
    train_step: Callable
    eval_step: Callable
    loss_and_grad: Callable         # for XLA's FLOP count of one micro-batch
    evals: list
    derive: Callable[[dict], dict]  # task-specific metrics computed from the eval means
    primary: str                    # the objective whose accuracy is `eval/accuracy`
    tokens_per_step: int
    flops_per_token: float
    stop: dict                      # {"signal": None | signum}, set by the signal handlers
    is_main: bool

    def next_batch(self) -> dict:
        """This host's next batch, placed on the mesh (the transfer is asynchronous)."""
        return shard_batch(next(self.data), self.mesh)

    def progress(self, step: int) -> dict:
        """Where the run stands after `step` steps: step, tokens and training FLOPs, the x axes of its curves."""
        tokens = step * self.tokens_per_step
        return {"step": step, "tokens": tokens, "flops": tokens * self.flops_per_token}


def train(config, workdir: str | Path) -> dict:
    """Train (or resume) the run in `workdir`; returns the final summary. Raises on failure after recording it."""
    run = RunDir(workdir)
    config_dict = to_dict(config)
    _check_same_config(run, config_dict)
    t_start = time.perf_counter()
    is_main = jax.process_index() == 0

    mesh, rules = make_mesh(config.mesh), parse_rules(config.mesh.rules)
    build = lambda: build_model(config.model, config.train.seed)
    model = nnx.eval_shape(build)  # abstract: shapes and logical axis names, no memory
    graphdef, abstract_params = nnx.split(model, nnx.Param)
    tx, schedule = make_optimizer(config.train)
    with jax.set_mesh(mesh):
        params = create_sharded(lambda: nnx.split(build(), nnx.Param)[1],
                                param_shardings(abstract_params, mesh, rules))
        state = {"params": params, "opt_state": jax.jit(tx.init)(params),
                 "step": jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh))}
    shardings = jax.tree.map(lambda x: x.sharding, state)
    shapes = example_shapes(config)
    per_example = tokens_per_example(config)

    data = train_iterator(config)
    checkpointer = Checkpointer(run.checkpoint_dir, keep=config.train.keep_checkpoints)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = checkpointer.restore_latest(abstract_state, data)  # lands in this mesh's shardings
    previous = run.read_summary()
    if restored is not None:
        start, state, meta = restored
        if is_main:  # every process sees the same workdir; two rewriting metrics.jsonl race on its temp file
            run.trim_metrics(start)
        wandb_id = meta.get("wandb_run_id")
        log.info("resuming %s from step %d", run.path, start)
    else:
        start, wandb_id, previous = 0, None, {}
        if is_main:
            run.write_config(config_dict, stamps())
            run.metrics_path.unlink(missing_ok=True)

    flops_per_token = analytic_flops_per_token(model, shapes, per_example)
    weights = {k: v for k, v in config.objective.items()}
    summary = dict(
        **{k: v for k, v in previous.items() if k.startswith(("eval/", "train/", "compile", "flops_per_token_xla"))},
        status="running", error=None, step=start, steps=config.train.steps, family=family(config.model),
        **count_params(model), flops_per_token=flops_per_token,
        flops_per_example=flops_per_token * per_example, tokens_per_example=per_example)
    if hasattr(model, "state_size"):  # decoding memory per sequence, the x axis of Zoology's recall plots
        summary["state_size"] = model.state_size(shapes["inputs"][-1])
    if is_main:
        run.update_summary(**summary)

    stop, logger = {"signal": None}, None
    handlers = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        logger = WandbLogger(config.logging, run.path, config_dict, wandb_id, is_main)
        summary["wandb_run_id"] = logger.run_id
        if is_main:
            run.update_summary(wandb_run_id=logger.run_id)
        jit_step = jax.jit(make_train_step(graphdef, weights, tx, schedule, config.train.grad_accum),
                           donate_argnums=0, out_shardings=(shardings, replicated(mesh)))
        session = Session(
            config=config, run=run, checkpointer=checkpointer, logger=logger, data=data, mesh=mesh, rules=rules,
            train_step=jit_step, eval_step=jax.jit(make_eval_step(graphdef, weights)),
            loss_and_grad=jax.value_and_grad(make_loss_fn(graphdef, weights), has_aux=True),
            evals=[shard_batch(b, mesh) for b in eval_batches(config)], derive=derived_eval_metrics(config),
            primary=next(k for k, v in weights.items() if v > 0),
            tokens_per_step=config.train.batch_size * per_example, flops_per_token=flops_per_token,
            stop=stop, is_main=is_main)
        summary.update(_run_loop(session, state, start))
        summary["status"] = "completed"
    except StoppedEarly as err:
        summary.update(status=err.status, error=str(err), **err.progress)
        raise
    except Exception as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        checkpointer.wait()
        checkpointer.close()
        summary["wall_seconds"] = previous.get("wall_seconds", 0.0) + time.perf_counter() - t_start
        if is_main:
            summary = run.update_summary(**summary)
        if logger is not None:
            logger.summary(summary)
            logger.finish(exit_code=0 if summary["status"] == "completed" else 1)
    return summary


def _compile(s: Session, state, first_batch) -> tuple[Callable, dict]:
    """AOT-compile the train step (timed) and count one micro-batch's FLOPs with XLA.

    The FLOP count compiles the unpartitioned forward+backward (abstract, single-device shapes), so it is the
    global figure whatever the mesh.
    """
    t0 = time.perf_counter()
    with jax.set_mesh(s.mesh), logical_rules(s.rules):
        compiled = s.train_step.lower(state, first_batch).compile()
    compile_seconds = time.perf_counter() - t0
    accum = s.config.train.grad_accum
    plain = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    micro = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] // accum, *x.shape[1:]), x.dtype), first_batch)
    xla = xla_flops_per_token(s.loss_and_grad, jax.tree.map(plain, state["params"]), micro,
                              s.tokens_per_step // s.config.train.batch_size)
    return compiled, {"compile_seconds": compile_seconds, "flops_per_token_xla": xla}


def _run_loop(s: Session, state, start: int) -> dict:
    tc = s.config.train
    if start >= tc.steps:
        return {}
    first = s.next_batch()
    compiled, out = _compile(s, state, first)
    if s.is_main:
        s.run.update_summary(**out)

    interval, pending, last_good, final_row = _Interval(), None, start, {}

    def settle(step_and_metrics) -> dict:
        """Read a finished step's metrics (a host sync on that step only) and check them; returns its log row
        when the step is a logging step, else {}."""
        nonlocal interval, last_good
        step, metrics = step_and_metrics
        metrics = jax.device_get(metrics)
        if not bool(metrics.pop("finite")):
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step} (loss={float(metrics['train/loss'])}, "
                f"grad_norm={float(metrics['grad_norm'])}); state not updated; last good checkpoint: "
                f"step {s.checkpointer.latest_step()}", s.progress(last_good))
        interval.add(metrics)
        last_good = step
        if step % tc.log_every and step != tc.steps:
            return {}
        row = {**s.progress(step), **interval.means(), "tokens_per_s": interval.rate(s.tokens_per_step)}
        interval = _Interval()
        return row

    def write_row(row: dict) -> None:
        final_row.update(row)
        if s.is_main:
            s.run.append_metrics([row])
        s.logger.log(row)
        progress.update(row["step"], row)

    with TrainProgress(s.run.path.name, tc.steps, start, s.config.logging.progress) as progress:
        batch = first
        for step in range(start + 1, tc.steps + 1):
            if batch is None:
                batch = s.next_batch()
            state, metrics = compiled(state, batch)
            evaluating = step % tc.eval_every == 0 or step == tc.steps
            # read the stop flag once: a signal landing later in this iteration stops the next one, after its save
            stopping = s.stop["signal"] is not None
            saving = step % tc.checkpoint_every == 0 or step == tc.steps or stopping
            # Stage the next batch while this step runs, except before a checkpoint: the saved iterator position
            # must be exactly `step` batches in.
            batch = s.next_batch() if not saving and step < tc.steps else None
            if pending is not None and (row := settle(pending)):
                write_row(row)
            pending, row = (step, metrics), {}
            if evaluating or saving:
                row, pending = settle(pending), None
            if evaluating:
                with jax.set_mesh(s.mesh), logical_rules(s.rules):
                    scores = evaluate(s.eval_step, state["params"], s.evals, s.primary)
                row = {**s.progress(step), **row, **scores, **s.derive(scores)}
            if row:
                write_row(row)
            if saving:
                s.checkpointer.save(step, state, s.data, {"wandb_run_id": s.logger.run_id, "step": step})
            if stopping:
                raise Interrupted(f"stopped by signal {s.stop['signal']} at step {step}; checkpoint saved, "
                                  "relaunch the same command to resume", s.progress(step))
    out.update({k: v for k, v in final_row.items() if k.startswith(("eval/", "train/"))})
    out.update(s.progress(last_good))
    return out
