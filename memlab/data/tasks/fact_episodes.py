"""Fact episodes: a text window of byte-level prepared text plus one episode of fabricated facts, for
meta-test-time training of a slow memory block (write M from the document, then answer probes without it).

An example is the text task's window (`inputs`, `targets`, and with `data.packing="segments"` its `segment_ids`,
`positions`, `token_mask`: next-token loss keeps the backbone a language model) and `data.facts_per_doc` (F) fresh
facts (memlab.data.facts) drawn from the "train" word pool for the train split and the disjoint "eval" pool for the
eval split, a pure function of (seed, split, index):

- `episode_doc_inputs`, `episode_doc_targets` [F, doc_len] int32, `episode_doc_mask` [F, doc_len] float32: each
  fact's line as its own next-token row, mask 1 at every real position (the write loss);
- `episode_probe_inputs`, `episode_probe_targets` [F, probe_len] int32, `episode_probe_mask` [F, probe_len]
  float32: prompt + answer + ".", mask 1 exactly where the target is an answer byte (teacher-forced exact match).

The `episode` pass of memlab.passes turns these into the view the episode is trained on. Tokens per example count
the text window only (`data.seq_len`), as for the other text tasks.
"""

from __future__ import annotations

import numpy as np

from memlab.data import manifest as mf
from memlab.data.facts import DOC_ROW_LEN, POOLS, PROBE_ROW_LEN, document_rows, draw_facts, probe_rows
from memlab.data.tasks.text import Text
from memlab.registry import TASKS

SPLIT_STREAM = {"train": 0, "eval": 1}
DOC_FIELDS = ("episode_doc_inputs", "episode_doc_targets", "episode_doc_mask")
PROBE_FIELDS = ("episode_probe_inputs", "episode_probe_targets", "episode_probe_mask")


@TASKS.register("fact_episodes")
class FactEpisodes:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        self.cfg, self.seed, self.stream, self.pool = cfg, seed, SPLIT_STREAM[split], POOLS[SPLIT_STREAM[split]]
        self.text = Text(cfg, split, seed)
        self.derived_eval_metrics = self.text.derived_eval_metrics  # bits per byte of the text windows

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults: the text task's and the episode's."""
        return {
            **Text.defaults(),  # path (a byte-tokenised `memlab data prepare` directory), seq_len, packing, ...
            "facts_per_doc": 8,  # F: facts written per episode (and probed)
            "doc_len": 48,  # tokens per document row (one fact's line); >= facts.DOC_ROW_LEN
            "probe_len": 32,  # tokens per probe row (prompt + answer + "."); >= facts.PROBE_ROW_LEN
        }

    @staticmethod
    def check(cfg) -> None:
        """ValueError naming the key for a corpus the text task rejects or that is not byte-tokenised, F < 1, or
        rows too short for the longest line or probe the fact generator makes. Resolves `data.vocab_size = 0`."""
        for key, least in (("facts_per_doc", 1), ("doc_len", DOC_ROW_LEN), ("probe_len", PROBE_ROW_LEN)):
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                why = "" if key == "facts_per_doc" else " (the longest row the fact generator makes)"
                raise ValueError(f"data.{key}={value!r} must be an integer >= {least}{why}")
        Text.check(cfg)
        kind = mf.load(cfg.path)["tokenizer"]["kind"]
        if kind != "byte":
            raise ValueError(f"data.path={cfg.path!r} is prepared with the {kind} tokeniser; fact episodes are byte "
                             "ids: prepare it with `memlab data prepare --tokenizer byte`")

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        f = cfg.facts_per_doc
        return {
            **Text.example_shapes(cfg),
            **{k: (f, cfg.doc_len) for k in DOC_FIELDS},
            **{k: (f, cfg.probe_len) for k in PROBE_FIELDS},
        }

    @staticmethod
    def tokens_per_example(cfg) -> int:
        """The text window's tokens, as for the other text tasks (the episode's rows are not counted)."""
        return cfg.seq_len

    def __len__(self) -> int:
        return len(self.text)

    def facts(self, index: int):
        """The episode's facts of example `index`."""
        rng = np.random.default_rng((self.seed, self.stream, int(index)))
        return draw_facts(self.cfg.facts_per_doc, self.pool, rng)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        facts = self.facts(index)
        doc, probe = document_rows(facts, self.cfg.doc_len), probe_rows(facts, self.cfg.probe_len)
        return {
            **self.text[index],
            **dict(zip(DOC_FIELDS, (doc["inputs"], doc["targets"], doc["mask"]))),
            **dict(zip(PROBE_FIELDS, (probe["inputs"], probe["targets"], probe["mask"]))),
        }
