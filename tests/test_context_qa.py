"""Context-QA task: determinism, facts where the layout says, answers that are the named facts' values, the flat
LM form agreeing with the split form, and clear errors for bad knobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memlab.config import ConfigError, load_config
from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.data.tasks.context_qa import ANSWER, PAD, QUERY, ContextQA, token_ranges
from tests.helpers import ROOT

SMALL = [
    "data.context_len=40",
    "data.num_facts=4",
    "data.key_len=2",
    "data.value_len=2",
    "data.questions_per_context=3",
    "data.compose_fraction=0.5",
    "logging.wandb_mode=disabled",
]


def config(*overrides):
    return load_config(ROOT / "experiments" / "context_qa.py", [*SMALL, *overrides])


def test_examples_are_pure_in_seed_split_index():
    cfg = config()
    a, b = ContextQA(cfg.data, "train", 0), ContextQA(cfg.data, "train", 0)
    for key, value in a[7].items():
        np.testing.assert_array_equal(value, b[7][key])
    assert not np.array_equal(a[7]["context"], ContextQA(cfg.data, "eval", 0)[7]["context"])
    assert not np.array_equal(a[7]["context"], a[8]["context"])


def test_answers_are_the_values_of_the_named_keys():
    cfg = config()
    task, ranges = ContextQA(cfg.data, "train", 3), token_ranges(cfg.data.vocab_size)
    kinds = set()
    for index in range(20):
        ex, lay = task[index], task.layout(index)
        ctx = ex["context"]
        for start, key, value in zip(lay["starts"], lay["keys"], lay["values"], strict=True):
            np.testing.assert_array_equal(ctx[start : start + 2], key)
            np.testing.assert_array_equal(ctx[start + 2 : start + 4], value)
        keys_in_ctx = [
            tuple(ctx[i : i + 2])
            for i in range(len(ctx) - 1)
            if all(ranges["key"][0] <= t < ranges["key"][1] for t in ctx[i : i + 2])
        ]
        assert len(keys_in_ctx) == len(set(keys_in_ctx)) == 4  # keys distinct, and only at fact positions
        for j, facts in enumerate(lay["questions"]):
            kinds.add(len(facts))
            question, targets, mask = ex["question"][j], ex["answer_targets"][j], ex["answer_mask"][j]
            assert question[0] == QUERY
            want = np.concatenate([lay["values"][i] for i in facts])
            np.testing.assert_array_equal(targets[mask > 0], want)
            assert mask.sum() == 2 * len(facts) and (targets[mask == 0] == PAD).all()
            assert ex["answer_inputs"][j, 0] == ANSWER
            np.testing.assert_array_equal(ex["answer_inputs"][j, 1:], targets[:-1])
    assert kinds == {1, 2}  # both single-fact and composed questions occur


def test_questions_are_distinct_within_a_context():
    """Drawn without replacement: asking all 4 facts of a context asks each once; composed questions are distinct
    ordered pairs of two different facts."""
    single = ContextQA(config("data.questions_per_context=4", "data.compose_fraction=0.0").data, "train", 0)
    for index in range(20):
        assert sorted(single.layout(index)["questions"]) == [(0,), (1,), (2,), (3,)]
    composed = ContextQA(config("data.questions_per_context=12", "data.compose_fraction=1.0").data, "train", 0)
    for index in range(20):
        questions = composed.layout(index)["questions"]
        assert sorted(questions) == sorted((a, b) for a in range(4) for b in range(4) if a != b)


def test_flat_form_scores_the_same_answers():
    cfg = config()
    ex = ContextQA(cfg.data, "train", 0)[5]
    shapes, total = example_shapes(cfg), tokens_per_example(cfg)
    assert {k: v.shape for k, v in ex.items()} == shapes and shapes["inputs"] == (total,)
    np.testing.assert_array_equal(ex["inputs"][:40], ex["context"])
    np.testing.assert_array_equal(ex["targets"][ex["loss_mask"] > 0], ex["answer_targets"][ex["answer_mask"] > 0])
    lq, la = shapes["question"][1], shapes["answer_inputs"][1]
    for j in range(3):  # question then answer-decoder inputs, block after block
        start = 40 + j * (lq + la)
        np.testing.assert_array_equal(ex["inputs"][start : start + lq], ex["question"][j])
        np.testing.assert_array_equal(ex["inputs"][start + lq : start + lq + la], ex["answer_inputs"][j])


def test_filler_distractors_leave_only_facts():
    cfg = config("data.distractors=filler")
    ex, lay = ContextQA(cfg.data, "train", 0)[0], ContextQA(cfg.data, "train", 0).layout(0)
    assert (ex["context"] != PAD).sum() == 4 * 4 and set(lay["starts"]) == set(np.flatnonzero(ex["context"])[::4])


def test_hard_negatives_look_like_facts_but_name_no_fact_key():
    """Hard distractors are key and value tokens (a fact is not spotted by its tokens), yet a question's key
    occurs in the context only where its fact is, so the answer stays unambiguous."""
    cfg = config("data.distractors=hard", "data.key_len=1", "data.context_len=96")
    task, ranges = ContextQA(cfg.data, "train", 0), token_ranges(cfg.data.vocab_size)
    (k0, k1), v1 = ranges["key"], ranges["value"][1]
    key_tokens = 0
    for i in range(20):
        lay = task.layout(i)
        context, fact_keys = lay["context"], lay["keys"][:, 0]
        assert ((context >= k0) & (context < v1)).all()  # nothing from the distractor range, no PAD
        for start, key in zip(lay["starts"], fact_keys, strict=True):
            assert np.flatnonzero(context == key).tolist() == [start]
        key_tokens += ((context >= k0) & (context < k1)).sum() - len(fact_keys)
    assert key_tokens > 20 * (96 - 4 * 3) / 3  # about half the distractors are keys of facts never asked


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.context_len=10", "cannot hold 4 facts"),
        ("data.distractors=noise", "distractors='noise' is not accepted"),
        ("data.compose_fraction=1.5", "compose_fraction=1.5 must be in"),
        ("data.num_facts=0", "num_facts=0 must be a positive integer"),
        ("data.vocab_size=6", "vocab_size must be >= 9"),
        ("data.questions_per_context=5", "questions_per_context=5 exceeds the 4 distinct questions"),
    ],
)
def test_bad_knobs_fail_with_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        config(override)


class _Oracle:
    """A conditional model of the answers: it answers right exactly when the answer tokens before have been right;
    with `first_wrong` (a boolean per question) it misses that question's first token, then continues right from
    a true previous token. Teacher forcing scores those questions 1/2 per token (A = 2); greedy decoding, 0."""

    def __init__(self, batch, first_wrong):
        self.targets, self.first_wrong = batch["answer_targets"], first_wrong

    def answer(self, question_index, inputs):
        """Logits [B, A, V] for answer inputs [B, A] of question `question_index`."""
        target = self.targets[:, question_index]
        expected = jnp.concatenate([jnp.full_like(target[:, :1], ANSWER), target[:, :-1]], axis=1)
        first = (jnp.arange(target.shape[1]) == 0)[None] & self.first_wrong[question_index]
        return jax.nn.one_hot(jnp.where(inputs == expected, jnp.where(first, target + 1, target), PAD), 128)

    def outputs(self, batch, flat: bool) -> dict:
        """The teacher-forced forward in the encoder-decoder form ([B, Q, A] logits with their targets) or in the
        decoder-only flat form ([B, T] logits over the whole example)."""
        split = jnp.stack([self.answer(j, batch["answer_inputs"][:, j]) for j in range(self.targets.shape[1])], 1)
        if not flat:
            return {"logits": split, "targets": batch["answer_targets"], "loss_mask": batch["answer_mask"]}
        logits = jnp.zeros((*batch["inputs"].shape, 128))
        for j in range(self.targets.shape[1]):  # each answer block follows the context and its question
            start = 40 + j * (3 + 2) + 3  # context_len 40; a question is QUERY + 2 key tokens, an answer 2 tokens
            logits = logits.at[:, start : start + 2].set(split[:, j])
        return {"logits": logits}

    def greedy(self, batch):
        """Answers [B, Q, A] decoded token by token from the model's own previous tokens (the reference)."""
        answers = []
        for j in range(self.targets.shape[1]):
            inputs = jnp.full_like(batch["answer_inputs"][:, j], PAD).at[:, 0].set(ANSWER)
            for a in range(inputs.shape[1]):
                token = jnp.argmax(self.answer(j, inputs)[:, a], -1)
                if a + 1 < inputs.shape[1]:
                    inputs = inputs.at[:, a + 1].set(token)
            answers.append(jnp.concatenate([inputs[:, 1:], token[:, None]], axis=1))
        return jnp.stack(answers, 1)


@pytest.mark.parametrize("flat", [False, True], ids=["encoder-decoder", "decoder-only"])
def test_exact_match_is_that_of_greedily_decoded_answers(flat):
    cfg = config("data.compose_fraction=0.0", "data.questions_per_context=4")
    task = ContextQA(cfg.data, "eval", 0)
    batch = {k: jnp.asarray(np.stack([task[i][k] for i in range(3)])) for k in task[0]}
    model = _Oracle(batch, first_wrong=jnp.asarray([False, True, False, True]))
    greedy = np.all(np.asarray(model.greedy(batch)) == np.asarray(batch["answer_targets"]), axis=-1)
    outputs = model.outputs(batch, flat)
    assert greedy.mean() == 0.5 and float(task.eval_metrics(outputs, batch)["exact_match"]) == 0.5
    # per-token accuracy under teacher forcing credits the second token of the questions greedy decoding misses
    scored = (outputs.get("loss_mask", batch["loss_mask"])) > 0
    targets = outputs.get("targets", batch["targets"])
    assert np.mean(np.argmax(outputs["logits"], -1)[scored] == targets[scored]) == 0.75
