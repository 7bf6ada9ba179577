"""The config every experiment starts from: all groups and keys with their defaults.

`base_config(task, model)` takes the common keys below plus the task's `data.*` knobs and the model family's
`model.*` knobs from their registries. Experiment files change what they need; keys not declared here cannot be
set (configs are locked).
"""

from __future__ import annotations

import os

import ml_collections

from memlab.parallel import DEFAULT_RULES


def base_config(task: str = "mqar", model: str = "lm") -> ml_collections.ConfigDict:
    from memlab.data.tasks import TASKS
    from memlab.models import MODELS

    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.task = task
    c.data.seed = 0  # seed of the example streams (train and eval are disjoint streams of it)
    c.data.num_workers = 2  # grain reader threads
    c.data.prefetch = 8  # batches prefetched ahead of the train step
    c.data.update(TASKS.get(task).defaults())

    c.model = ml_collections.ConfigDict()
    c.model.name = model
    c.model.update(MODELS.get(model).defaults())
    # the model's vocabulary is the task's, and so is any other size both declare (num_chunks)
    for key in sorted({"vocab_size", *c.model} & set(c.data)):
        c.model[key] = c.data.get_ref(key)

    c.objective = ml_collections.ConfigDict({"answer": 1.0})

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 64  # examples per optimizer step (split into grad_accum micro-batches)
    c.train.grad_accum = 1
    c.train.lr = 3e-3
    c.train.schedule = "cosine"  # cosine | wsd | constant
    c.train.warmup_steps = 100  # linear warmup from 0; one >= steps is clipped to steps - 1 (with a warning)
    c.train.warmup_fraction = 0.0  # in [0, 1): when > 0, warm up over this share of steps (warmup_steps is ignored)
    c.train.decay_fraction = 0.2  # wsd: share of steps spent decaying at the end
    c.train.min_lr_ratio = 0.1
    c.train.weight_decay = 0.1
    c.train.b1 = 0.9
    c.train.b2 = 0.98
    c.train.grad_clip = 1.0
    c.train.seed = 0
    c.train.init_from = ""  # a run directory whose parameters this run starts from ("" = a fresh init)
    c.train.init_step = -1  # its checkpoint to start from (-1 = the newest)
    c.train.init_map = ()  # "old->new" parameter-path prefixes to copy from it; () = every parameter, same paths
    c.train.trainable = ()  # regexes (matched from the start of parameter paths) of what trains; () = everything
    c.train.curriculum_steps = 0  # > 0: the first this many steps train on curriculum_objective, the rest on objective
    c.train.curriculum_objective = ml_collections.ConfigDict()  # objective key -> weight, as `objective`
    c.train.precision = "float32"  # compute dtype: float32 | bfloat16 (parameters stay fp32)
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3
    c.train.eval_every = 100
    c.train.log_every = 10
    # XLA's FLOP count beside the analytic one in summary.json: a cross-check that compiles the gradient and each
    # loop body once more (seconds per run on a CPU); MEMLAB_XLA_FLOPS=0 makes off the default (the tests do)
    c.train.xla_flops = os.environ.get("MEMLAB_XLA_FLOPS", "1") != "0"
    c.model.dtype = c.train.get_ref("precision")  # the model computes in the training precision

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 512
    c.eval.batch_size = 128

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1  # sizes of the mesh axes; one may be -1 (the devices the others leave)
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.dcn_data = 1  # multi-slice / multi-node: how many slices the data axis spans
    c.mesh.rules = DEFAULT_RULES  # logical axis name -> mesh axes ("a,b"; "" = replicated)
    c.mesh.coordinator_address = ""  # explicit multi-process setup (else SLURM / TPU pods are detected)
    c.mesh.num_processes = 1
    c.mesh.process_id = 0

    c.logging = ml_collections.ConfigDict()
    c.logging.wandb_mode = (
        "auto"  # auto (WANDB_MODE if set, else online when logged in, else offline) | offline | online | disabled
    )
    c.logging.project = "memlab"
    c.logging.entity = ""
    c.logging.group = ""
    c.logging.tags = ()
    c.logging.run_name = ""
    c.logging.sweep_id = ""
    c.logging.launch_id = ""
    c.logging.progress = True
    return c
