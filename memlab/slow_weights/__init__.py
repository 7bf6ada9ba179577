"""Test-time-trained slow weights: write facts into a run's slow block, save it, query it in a fresh process.

    write.py     the writes: Adam on the slow memories only (the backbone frozen), optionally with a contrastive
                 term; the one-shot delta-rule write; full fine-tuning (the interference control)
    score.py     what a written model recalls: teacher-forced and autoregressive exact match, p of the answer,
                 cross-contamination between two documents, facts in context
    commands.py  `memlab write RUN_DIR --facts FILE --out BLOCK` and `memlab query RUN_DIR --block BLOCK ...`

The model is a BDH run with `model.slow_layers` (memlab.models.bdh, memlab.models.slow_block); a written block is
the run's `slow` parameter sub-tree saved as a verified parameter block (memlab.train.param_blocks).
"""
