"""Beyond-window recall: facts in earlier windows of an episode, the question in the last one.

An episode is `data.num_windows` windows of `data.window` (W) tokens. Facts `FACT key value` sit at random offsets
inside their windows (never across a boundary) among filler; the last window ends with `QUERY key` for one fact,
and the target at that key is the fact's value. A backbone whose attention is limited to its block of W tokens
(`model.attention_window_kind="block"`) cannot see a fact `data.fact_distance` >= 1 windows back, so only a state
spanning the episode (a δ-mem adapter) can answer; `fact_distance=0` keeps every fact in the last window too (the
in-window, paper-style condition the backbone is trained on).

The vocabulary is shared with byte text so one model reads both: ids 0..256 are the byte tokeniser's (256 = EOS),
then QUERY, FACT, `data.num_keys` keys and `data.num_values` values, inside `data.vocab_size`. Filler is random
bytes or consecutive text of a prepared corpus (`data.text_path`); with `data.text_fraction` an example is instead
a plain text window (no answer, next-token loss only), which keeps the backbone a language model.

Every example has inputs, targets (next token; the answer at the last position), loss_mask (1 at the answer
only) and token_mask (1 everywhere), all of length T = num_windows * W. Filler never holds an id above 256, so
facts and the query are found from the tokens alone (`retrieve_batch` relies on that).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from memlab.data.tasks.text import Text
from memlab.registry import TASKS

SPLIT_STREAM = {"train": 0, "eval": 1}
TEXT_VOCAB = 257  # the byte tokeniser's ids, EOS included
QUERY, FACT = TEXT_VOCAB, TEXT_VOCAB + 1
FIRST_KEY = TEXT_VOCAB + 2
FACT_LEN, QUERY_LEN = 3, 2  # FACT key value | QUERY key
MAX_FACTS = 16
FILLERS = ("random", "text")


def _text_config(cfg) -> ml_collections.ConfigDict:
    """The text task's knobs reading `data.text_path` in windows of the whole episode, concatenated."""
    sub = ml_collections.ConfigDict(Text.defaults())
    sub.update(path=cfg.text_path, seq_len=cfg.num_windows * cfg.window, packing="concat")
    return sub


def _needs_text(cfg) -> bool:
    return cfg.filler == "text" or cfg.text_fraction > 0


@TASKS.register("window_recall")
class WindowRecall:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        self.cfg, self.seed, self.stream = cfg, seed, SPLIT_STREAM[split]
        self.text = Text(_text_config(cfg), split, seed) if _needs_text(cfg) else None

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {"vocab_size": 512,     # ids 0..256 bytes, then QUERY, FACT, keys, values; the rest unused
                "num_windows": 4,      # windows per episode; the last holds the question
                "window": 64,          # W: tokens per window (set model.attention_window to it)
                "num_facts": 4,        # facts per episode (1..16), distinct keys; one is asked
                "fact_distance": -1,   # windows between the facts' and the last: 0 = in it, -1 = each uniform
                "num_keys": 64,        # key ids
                "num_values": 64,      # value ids (values may repeat within an episode)
                "filler": "random",    # random: uniform bytes 0..255 | text: consecutive text of data.text_path
                "text_path": "",       # a directory from `memlab data prepare` (byte tokeniser)
                "text_fraction": 0.0}  # share of examples that are plain text windows of data.text_path

    @staticmethod
    def check(cfg) -> None:
        for key in ("vocab_size", "num_windows", "window", "num_facts", "num_keys", "num_values"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"data.{key}={cfg[key]!r} must be a positive integer")
        if cfg.num_facts > MAX_FACTS:
            raise ValueError(f"data.num_facts={cfg.num_facts} must be in [1, {MAX_FACTS}]")
        if cfg.num_keys < cfg.num_facts:
            raise ValueError(f"data.num_keys={cfg.num_keys} must be >= data.num_facts={cfg.num_facts} "
                             "(keys are distinct within an episode)")
        need = FIRST_KEY + cfg.num_keys + cfg.num_values
        if cfg.vocab_size < need:
            raise ValueError(f"data.vocab_size={cfg.vocab_size} cannot hold {TEXT_VOCAB} byte ids, QUERY, FACT, "
                             f"data.num_keys={cfg.num_keys} keys and data.num_values={cfg.num_values} values: "
                             f"need >= {need}")
        d = cfg.fact_distance
        if not isinstance(d, int) or not -1 <= d < cfg.num_windows or (d == -1 and cfg.num_windows < 2):
            raise ValueError(f"data.fact_distance={d!r} must be -1 (a random earlier window; needs num_windows "
                             f">= 2), 0 (the last window) or a distance in [1, {cfg.num_windows - 1}] windows "
                             f"for data.num_windows={cfg.num_windows}")
        room = FACT_LEN * cfg.num_facts + (QUERY_LEN if d == 0 else 0)
        if cfg.window < max(room, QUERY_LEN):
            raise ValueError(f"data.window={cfg.window} cannot hold {cfg.num_facts} facts of {FACT_LEN} tokens"
                             + (f" and the {QUERY_LEN}-token question" if d == 0 else "") + f": need >= {room}")
        if cfg.filler not in FILLERS:
            raise ValueError(f"data.filler={cfg.filler!r} is not accepted; choose one of {', '.join(FILLERS)}")
        if not 0.0 <= cfg.text_fraction <= 1.0:
            raise ValueError(f"data.text_fraction={cfg.text_fraction} must be in [0, 1]")
        if not _needs_text(cfg):
            return
        if not cfg.text_path:
            raise ValueError("data.text_path is empty, but data.filler='text' or data.text_fraction > 0 reads "
                             "text: set it to a directory from `memlab data prepare --source stdlib --out DIR`")
        sub = _text_config(cfg)
        try:
            Text.check(sub)
        except ValueError as err:
            raise type(err)(f"data.text_path={cfg.text_path!r} (read in windows of num_windows * window "
                            f"tokens): {err}") from None
        if sub.vocab_size > TEXT_VOCAB:
            raise ValueError(f"data.text_path={cfg.text_path!r} has a tokeniser of {sub.vocab_size} ids; this task "
                             f"shares ids above {TEXT_VOCAB - 1} with its own tokens: prepare it with the byte "
                             "tokeniser")

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        t = cfg.num_windows * cfg.window
        return {k: (t,) for k in ("inputs", "targets", "loss_mask", "token_mask")}

    def __len__(self) -> int:
        return np.iinfo(np.int32).max

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        cfg = self.cfg
        t, w, n = cfg.num_windows * cfg.window, cfg.window, cfg.num_facts
        rng = np.random.default_rng((self.seed, self.stream, int(index)))
        token_mask = np.ones(t, np.float32)
        if rng.random() < cfg.text_fraction:  # drawn always, so an index's episode does not depend on the share
            return {**self.text[index], "loss_mask": np.zeros(t, np.float32), "token_mask": token_mask}
        seq = np.empty(t + 1, np.int32)
        seq[:t] = self.text[index]["inputs"] if cfg.filler == "text" else rng.integers(0, 256, t)
        keys = FIRST_KEY + rng.choice(cfg.num_keys, size=n, replace=False)
        values = FIRST_KEY + cfg.num_keys + rng.integers(0, cfg.num_values, size=n)
        last = cfg.num_windows - 1
        if cfg.fact_distance == -1:
            windows = rng.integers(0, last, size=n)
        else:
            windows = np.full(n, last - cfg.fact_distance)
        for win in np.unique(windows):
            facts = np.flatnonzero(windows == win)
            room = w - (QUERY_LEN if win == last else 0)
            gaps = np.sort(rng.choice(room - len(facts) * (FACT_LEN - 1), size=len(facts), replace=False))
            starts = win * w + gaps + np.arange(len(facts)) * (FACT_LEN - 1)  # stars and bars: no overlaps
            seq[starts], seq[starts + 1], seq[starts + 2] = FACT, keys[facts], values[facts]
        asked = rng.integers(n)
        seq[t - 2], seq[t - 1], seq[t] = QUERY, keys[asked], values[asked]
        loss_mask = np.zeros(t, np.float32)
        loss_mask[t - 1] = 1.0
        return {"inputs": seq[:-1], "targets": seq[1:], "loss_mask": loss_mask, "token_mask": token_mask}

    @staticmethod
    def eval_metrics(outputs: dict, batch: dict) -> dict:
        """`exact_match`: the share of the batch's episodes whose one-token answer is the argmax at the last
        position (no teacher forcing involved); text examples are left out."""
        episode = batch["loss_mask"][:, -1] > 0
        right = (jnp.argmax(outputs["logits"][:, -1], axis=-1) == batch["targets"][:, -1]) & episode
        return {"exact_match": right.sum() / jnp.maximum(episode.sum(), 1)}


def retrieve_batch(batch: dict, window: int) -> dict:
    """The retrieval baseline: for each episode whose asked fact lies in an earlier window, that window (found by
    its `FACT key` tokens) is copied into the last window, so a backbone that sees only its own window has the
    fact in view. The last window becomes [W - 2 tokens of the retrieved window, keeping the fact whole; QUERY
    key]; earlier windows, the answer position (the last) and the masks are unchanged. Episodes whose fact is
    already in the last window, and text examples, come back as they were. Numpy, batch [B, T]."""
    inputs, targets = np.array(batch["inputs"]), np.array(batch["targets"])
    b, t = inputs.shape
    start = t - window  # the last window's first position
    out = {**batch, "inputs": inputs, "targets": targets}
    if start <= 0:
        return out
    key = inputs[:, -1]
    found = (inputs[:, :start - 1] == FACT) & (inputs[:, 1:start] == key[:, None])
    rows = np.flatnonzero(found.any(axis=1) & (np.asarray(batch["loss_mask"])[:, -1] > 0))
    fact = found[rows].argmax(axis=1)
    keep = window - QUERY_LEN
    skip = np.maximum(0, fact % window + FACT_LEN - keep)  # drop the window's head only if the fact ends late
    taken = (fact // window * window + skip)[:, None] + np.arange(keep)
    inputs[rows, start:t - QUERY_LEN] = np.take_along_axis(inputs[rows], taken, axis=1)
    targets[rows, start - 1:t - 1] = inputs[rows, start:]  # next tokens; the answer at t - 1 stays
    return out


def retrieve(example: dict, window: int) -> dict:
    """`retrieve_batch` for one example."""
    batched = retrieve_batch({k: np.asarray(v)[None] for k, v in example.items()}, window)
    return {k: v[0] for k, v in batched.items()}
