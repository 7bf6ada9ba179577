"""Context QA: a context of L tokens holds n facts (key span -> value span) among distractors; questions name
one key (or two, in the composition variant) and the answer is the value(s).

Vocabulary: 0 PAD, 1 QUERY (opens a question), 2 ANSWER (opens an answer), then three equal ranges for key,
value and distractor tokens, so a key occurrence in the context is unambiguous. Facts are non-overlapping spans
`key value` at random places; every other context position is a distractor: a random token of the distractor
range (`data.distractors="random"`: a fact is spotted by its tokens alone), PAD ("filler"), or a hard negative
("hard"): a random key or value token, never one of this context's fact keys, so the context is full of spans that
look like facts and only the question tells which were. With hard negatives a memory cannot keep the facts and
drop the rest: it must hold every key -> value it may be asked about, which is what compresses at L/k = 16.
Keys are distinct within a context; values may repeat. Questions are distinct within a context.

An example keeps the parts separate, so a memory model can encode the context without seeing any question:
  context [L]; question [Q, Lq] = QUERY key (key) PAD..; answer_inputs [Q, A] = ANSWER a_0 .. a_{A-2};
  answer_targets [Q, A] = a_0 .. a_{A-1}; answer_mask [Q, A] (a single-key question in a composition config
  leaves its second value unscored).
and also flat, for a decoder-only LM: inputs = [context; q_1; answer_inputs_1; ...; q_Q; answer_inputs_Q],
targets = the next token, except over each answer block where they are that block's answer_targets;
loss_mask marks the answer targets. Both forms feed a model exactly `tokens_per_example` tokens.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from memlab.registry import TASKS

SPLIT_STREAM = {"train": 0, "eval": 1}
PAD, QUERY, ANSWER = 0, 1, 2
NUM_SPECIAL = 3
DISTRACTORS = ("random", "filler", "hard")


def token_ranges(vocab_size: int) -> dict[str, tuple[int, int]]:
    """[start, stop) of the key, value and distractor token ranges."""
    third = (vocab_size - NUM_SPECIAL) // 3
    start = NUM_SPECIAL
    return {"key": (start, start + third), "value": (start + third, start + 2 * third),
            "distractor": (start + 2 * third, start + 3 * third)}


@TASKS.register("context_qa")
class ContextQA:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        self.cfg, self.seed, self.stream = cfg, seed, SPLIT_STREAM[split]
        self.ranges = token_ranges(cfg.vocab_size)
        self.lq, self.la = self.question_len(cfg), self.answer_len(cfg)

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {"vocab_size": 128,
                "context_len": 512,          # L: tokens in the context
                "num_facts": 8,              # n: key -> value facts placed in the context
                "key_len": 1,                # tokens per key span
                "value_len": 2,              # tokens per value span
                "distractors": "random",     # random: distractor-range tokens | filler: PAD | hard: key/value tokens
                "questions_per_context": 1,  # Q: questions asked about each context (a memory encodes it once)
                "compose_fraction": 0.0}     # share of questions naming two keys (answer: both values, in order)

    @staticmethod
    def check(cfg) -> None:
        ranges = token_ranges(cfg.vocab_size) if cfg.vocab_size >= NUM_SPECIAL + 3 else None
        if ranges is None or ranges["key"][1] - ranges["key"][0] < 2:
            raise ValueError(f"data.vocab_size must be >= {NUM_SPECIAL + 6} (3 special tokens, then key, value and "
                             f"distractor ranges of >= 2 tokens each), got {cfg.vocab_size}")
        for key in ("context_len", "num_facts", "key_len", "value_len", "questions_per_context"):
            value = cfg[key]
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key}={value!r} must be a positive integer")
        keys = ranges["key"][1] - ranges["key"][0]
        if keys ** cfg.key_len < cfg.num_facts:
            raise ValueError(f"data.num_facts={cfg.num_facts} needs distinct keys, but only {keys}^{cfg.key_len} "
                             f"key spans exist for data.vocab_size={cfg.vocab_size}, data.key_len={cfg.key_len}")
        need = cfg.num_facts * (cfg.key_len + cfg.value_len)
        if cfg.context_len < need:
            raise ValueError(f"data.context_len={cfg.context_len} cannot hold {cfg.num_facts} facts of "
                             f"{cfg.key_len}+{cfg.value_len} tokens: need >= {need}")
        if cfg.distractors not in DISTRACTORS:
            raise ValueError(f"data.distractors={cfg.distractors!r} is not accepted; choose one of {', '.join(DISTRACTORS)}")
        if not 0.0 <= cfg.compose_fraction <= 1.0:
            raise ValueError(f"data.compose_fraction={cfg.compose_fraction} must be in [0, 1]")
        if cfg.compose_fraction > 0 and cfg.num_facts < 2:
            raise ValueError("data.compose_fraction > 0 needs data.num_facts >= 2 (a composed question names two facts)")
        n, q = cfg.num_facts, cfg.questions_per_context
        if (cfg.compose_fraction < 1 and q > n) or (cfg.compose_fraction > 0 and q > n * (n - 1)):
            limit = n if cfg.compose_fraction < 1 else n * (n - 1)
            raise ValueError(f"data.questions_per_context={q} exceeds the {limit} distinct questions "
                             f"data.num_facts={n} allows (questions are drawn without replacement within a context)")

    @staticmethod
    def question_len(cfg) -> int:
        return 1 + cfg.key_len * (2 if cfg.compose_fraction > 0 else 1)

    @staticmethod
    def answer_len(cfg) -> int:
        return cfg.value_len * (2 if cfg.compose_fraction > 0 else 1)

    @classmethod
    def tokens_per_example(cls, cfg) -> int:
        """Context, questions and answer-decoder inputs: the same count in the split and the flat form."""
        return cfg.context_len + cfg.questions_per_context * (cls.question_len(cfg) + cls.answer_len(cfg))

    @classmethod
    def example_shapes(cls, cfg) -> dict[str, tuple[int, ...]]:
        q, lq, la, t = cfg.questions_per_context, cls.question_len(cfg), cls.answer_len(cfg), cls.tokens_per_example(cfg)
        return {"context": (cfg.context_len,), "question": (q, lq), "answer_inputs": (q, la),
                "answer_targets": (q, la), "answer_mask": (q, la),
                "inputs": (t,), "targets": (t,), "loss_mask": (t,)}

    def __len__(self) -> int:
        return np.iinfo(np.int32).max

    def layout(self, index: int) -> dict:
        """The example's structure: context tokens, fact spans (start, key, value) and the questions' fact indices.
        Pure in (seed, split, index); used by `__getitem__` and by probes that need to know where facts are."""
        cfg = self.cfg
        rng = np.random.default_rng((self.seed, self.stream, int(index)))
        n, kl, vl, length = cfg.num_facts, cfg.key_len, cfg.value_len, cfg.context_len
        (k0, k1), (v0, v1), (d0, d1) = self.ranges["key"], self.ranges["value"], self.ranges["distractor"]
        codes = rng.choice((k1 - k0) ** kl, size=n, replace=False)  # distinct keys as base-(k1-k0) numbers
        keys = np.stack([(codes // (k1 - k0) ** i) % (k1 - k0) for i in range(kl)], axis=1) + k0
        values = rng.integers(v0, v1, size=(n, vl))
        if cfg.distractors == "random":
            context = rng.integers(d0, d1, size=length).astype(np.int32)
        elif cfg.distractors == "hard":  # key and value tokens; a fact key occurs only in its fact
            pool = np.setdiff1d(np.arange(k0, v1), keys)
            context = rng.choice(pool, size=length).astype(np.int32)
        else:
            context = np.full(length, PAD, dtype=np.int32)
        span = kl + vl
        gaps = np.sort(rng.choice(length - n * span + n, size=n, replace=False))  # stars and bars
        starts = gaps + np.arange(n) * (span - 1)
        for i, s in enumerate(starts):
            context[s:s + kl], context[s + kl:s + span] = keys[i], values[i]
        return {"context": context, "starts": starts, "keys": keys, "values": values,
                "questions": self._questions(rng, n)}

    def _questions(self, rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
        """Q questions as fact indices, drawn without replacement within the context (a repeated question would
        score the same recall twice): single facts from the n facts, composed ones from the n (n - 1) ordered
        pairs."""
        q = self.cfg.questions_per_context
        composed = rng.random(q) < self.cfg.compose_fraction
        singles = iter(rng.choice(n, size=int((~composed).sum()), replace=False))
        codes = rng.choice(n * (n - 1), size=int(composed.sum()), replace=False)  # pair (a, b != a) as a code
        pairs = iter((int(c) // (n - 1), int(c) % (n - 1) + (int(c) % (n - 1) >= int(c) // (n - 1))) for c in codes)
        return [next(pairs) if c else (int(next(singles)),) for c in composed]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        lay = self.layout(index)
        q, lq, la = self.cfg.questions_per_context, self.lq, self.la
        question = np.full((q, lq), PAD, np.int32)
        targets = np.full((q, la), PAD, np.int32)
        mask = np.zeros((q, la), np.float32)
        for j, facts in enumerate(lay["questions"]):
            keys = np.concatenate([lay["keys"][i] for i in facts])
            values = np.concatenate([lay["values"][i] for i in facts])
            question[j, 0], question[j, 1:1 + len(keys)] = QUERY, keys
            targets[j, :len(values)], mask[j, :len(values)] = values, 1.0
        answer_inputs = np.concatenate([np.full((q, 1), ANSWER, np.int32), targets[:, :-1]], axis=1)
        return {"context": lay["context"], "question": question, "answer_inputs": answer_inputs,
                "answer_targets": targets, "answer_mask": mask,
                **self._flat(lay["context"], question, answer_inputs, targets, mask)}

    def eval_metrics(self, outputs: dict, batch: dict) -> dict:
        """`exact_match`: the share of questions whose answer is right in every scored token, the metric that does
        not flatter (per-token accuracy scores the second answer token given the true first).

        It is the exact match of greedily decoded answers: decoding greedily reproduces the true answer exactly
        when every token's argmax given the true tokens before it is right (up to the first wrong token both see
        the same prefix), so one teacher-forced pass gives it. The decoder-only form reads the earlier questions'
        answers as the example holds them."""
        logits = outputs["logits"]
        targets, mask = outputs.get("targets", batch["targets"]), outputs.get("loss_mask", batch["loss_mask"])
        if targets.ndim == 2:  # the flat LM form: gather each question's answer block
            blocks = self.answer_positions(self.cfg.context_len, self.cfg.questions_per_context, self.lq, self.la)
            logits, targets, mask = logits[:, blocks], targets[:, blocks], mask[:, blocks]
        scored = mask > 0
        right = jnp.all((jnp.argmax(logits, -1) == targets) | ~scored, axis=-1)
        asked = scored.any(axis=-1)
        return {"exact_match": (right & asked).sum() / jnp.maximum(asked.sum(), 1)}

    @staticmethod
    def answer_positions(context_len: int, questions: int, question_len: int, answer_len: int) -> np.ndarray:
        """[Q, A] positions of the answer blocks in the flat form: each follows the context and its question."""
        starts = context_len + np.arange(questions) * (question_len + answer_len) + question_len
        return starts[:, None] + np.arange(answer_len)

    @classmethod
    def _flat(cls, context, question, answer_inputs, answer_targets, answer_mask) -> dict[str, np.ndarray]:
        """[context; q_1; answer_inputs_1; ...]: next-token targets, answer targets over each answer block."""
        parts = [context] + [part for j in range(len(question)) for part in (question[j], answer_inputs[j])]
        inputs = np.concatenate(parts).astype(np.int32)
        targets = np.concatenate([inputs[1:], [PAD]]).astype(np.int32)
        loss_mask = np.zeros(len(inputs), np.float32)
        blocks = cls.answer_positions(len(context), len(question), question.shape[1], answer_inputs.shape[1])
        targets[blocks], loss_mask[blocks] = answer_targets, answer_mask
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}
