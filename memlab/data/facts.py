"""Fabricated facts for slow-weight memory: "Zorvik lives in talmenu." with made-up, pronounceable names.

A fact is (subject, relation, object); its line is `"{subject} {relation} {object}.\\n"`, its prompt
`"{subject} {relation} "` and its answer the object, the bytes a model must recall. Subjects are capitalised
fabricated words, objects lowercase ones, relations one of `RELATIONS`. Words come from one syllable inventory and
fall into two disjoint pools, "train" and "eval", by a fixed hash of the lowercase word (`pool_of`): no eval
subject or object ever appears in training, whatever the seed. Within one list of facts subjects are distinct
(every prompt has one answer) and objects are distinct (no answer is shared).

Facts files are JSON lines `{"subject": .., "relation": .., "object": ..}` (`write_facts`, `read_facts`). The row
builders turn facts into padded numpy rows of byte ids (memlab.data.tokenizer.ByteTokenizer): `document_rows`
(each line as its own next-token row: the write loss), `probe_rows` (prompt + answer + ".", scored on the answer
bytes only: teacher-forced exact match) and `document_text` (all lines, for facts in context).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlab.errors import DataError

POOLS = ("train", "eval")
RELATIONS = (
    "lives in",
    "eats",
    "owns a",
    "fears",
    "was born in",
    "likes",
    "sells",
    "keeps a",
    "works in",
    "visits",
)
ONSETS = "bdfgklmnprstvz"
VOWELS = "aeiou"
CODAS = "klmnrst"
MIN_WORD, MAX_WORD = 4, 9  # bytes of a fabricated word (subject or object)
MAX_LINE = MAX_WORD + 1 + max(map(len, RELATIONS)) + 1 + MAX_WORD + 2  # "S r O.\n"
DOC_ROW_LEN = MAX_LINE - 1  # a line's next-token row: every byte but the last as input
PROBE_ROW_LEN = MAX_LINE - 2  # prompt + answer + "." less one byte
KEYS = ("subject", "relation", "object")


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str

    @property
    def line(self) -> str:
        return f"{self.subject} {self.relation} {self.object}.\n"

    @property
    def prompt(self) -> str:
        return f"{self.subject} {self.relation} "

    @property
    def answer(self) -> str:
        return self.object


def pool_of(word: str) -> str:
    """The pool ("train" or "eval") a fabricated word belongs to: a fixed hash of its lowercase form."""
    return POOLS[zlib.crc32(word.lower().encode("utf-8")) & 1]


def _word(rng: np.random.Generator, pool: str) -> str:
    """A fabricated word of 2-3 syllables (consonant-vowel, with an optional final consonant), 4-9 bytes, in `pool`."""
    while True:
        parts = []
        for _ in range(rng.integers(2, 4)):
            parts.append(ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))])
            if rng.random() < 0.4:
                parts.append(CODAS[rng.integers(len(CODAS))])
        word = "".join(parts)
        if MIN_WORD <= len(word) <= MAX_WORD and pool_of(word) == pool:
            return word


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not accepted; choose one of {', '.join(POOLS)}")


def draw_facts(n: int, pool: str, rng: np.random.Generator) -> list[Fact]:
    """`n` facts of `pool` drawn with `rng`: distinct subjects, distinct objects, relations uniform."""
    _check_pool(pool)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer number of facts")
    subjects: set[str] = set()
    objects: set[str] = set()
    facts = []
    while len(facts) < n:
        subject, obj = _word(rng, pool), _word(rng, pool)
        if subject in subjects or obj in objects or subject == obj:
            continue
        subjects.add(subject)
        objects.add(obj)
        facts.append(Fact(subject.capitalize(), RELATIONS[rng.integers(len(RELATIONS))], obj))
    return facts


def make_facts(n: int, pool: str, seed: int) -> list[Fact]:
    """`n` fabricated facts of `pool`, a pure function of (pool, seed)."""
    _check_pool(pool)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return draw_facts(n, pool, np.random.default_rng((seed, POOLS.index(pool))))


def document_text(facts: list[Fact]) -> str:
    """All the facts' lines, in order: the document as one string (for facts in context)."""
    return "".join(f.line for f in facts)


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def _rows(seqs: list[np.ndarray], length: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) [len(seqs), length]: seq[:-1] and seq[1:] of each, padded with 0."""
    inputs, targets = np.zeros((2, len(seqs), length), np.int32)
    for i, seq in enumerate(seqs):
        if len(seq) - 1 > length:
            raise ValueError(f"{what} {i} needs a row of {len(seq) - 1} tokens (its {len(seq)} bytes less one); "
                             f"length={length} is too short")
        inputs[i, : len(seq) - 1], targets[i, : len(seq) - 1] = seq[:-1], seq[1:]
    return inputs, targets


def document_rows(facts: list[Fact], length: int) -> dict[str, np.ndarray]:
    """Each fact's line as its own next-token row [F, length]: `inputs`, `targets` (int32) and `mask` (float32,
    1 at every real position, 0 on padding): the write loss of the facts written jointly."""
    seqs = [_bytes(f.line) for f in facts]
    inputs, targets = _rows(seqs, length, "the line of fact")
    mask = np.zeros((len(facts), length), np.float32)
    for i, seq in enumerate(seqs):
        mask[i, : len(seq) - 1] = 1.0
    return {"inputs": inputs, "targets": targets, "mask": mask}


def probe_rows(facts: list[Fact], length: int) -> dict[str, np.ndarray]:
    """Each fact's question as a row [F, length] of prompt + answer + ".": `inputs`, `targets` (int32), `mask`
    (float32, 1 exactly where the target is an answer byte, so argmax right at every mask position is teacher-forced
    exact match), `answer_start` [F] (the index in inputs of the last prompt byte, whose target is the answer's first
    byte) and `answer_len` [F] (the answer's bytes), int32."""
    prompts, answers = [_bytes(f.prompt) for f in facts], [_bytes(f.answer) for f in facts]
    inputs, targets = _rows([np.concatenate([p, a, _bytes(".")]) for p, a in zip(prompts, answers)], length,
                            "the probe of fact")
    start = np.array([len(p) - 1 for p in prompts], np.int32)
    size = np.array([len(a) for a in answers], np.int32)
    mask = ((np.arange(length) >= start[:, None]) & (np.arange(length) < (start + size)[:, None])).astype(np.float32)
    return {"inputs": inputs, "targets": targets, "mask": mask, "answer_start": start, "answer_len": size}


def write_facts(path: str | Path, facts: list[Fact]) -> None:
    """Write `facts` as JSON lines {"subject", "relation", "object"}, one fact a line."""
    lines = [json.dumps({"subject": f.subject, "relation": f.relation, "object": f.object}) + "\n" for f in facts]
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_facts(path: str | Path) -> list[Fact]:
    """The facts of a JSON-lines facts file; a DataError naming the file and line for a missing or empty file, a
    line that is not a JSON object with exactly the keys subject, relation, object as non-empty one-line strings,
    or two facts with the same prompt (subject and relation)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"facts file {path} does not exist; make one with `memlab data facts --out {path}`")
    facts: list[Fact] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg}); each line must be "
                            '{"subject": ..., "relation": ..., "object": ...}') from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: a line must be a JSON object with keys {', '.join(KEYS)}; "
                            f"got {type(row).__name__}")
        missing, extra = [k for k in KEYS if k not in row], sorted(set(row) - set(KEYS))
        if missing or extra:
            raise DataError(f"{where}: " + "; ".join(
                [f"missing key(s) {', '.join(missing)}"] * bool(missing) + [f"unknown key(s) {', '.join(extra)}"] *
                bool(extra)) + f"; the keys are exactly {', '.join(KEYS)}")
        for key in KEYS:
            value = row[key]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {key}={value!r} must be a non-empty string")
            if "\n" in value or "\r" in value:
                raise DataError(f"{where}: {key}={value!r} must be on one line (no line breaks)")
        fact = Fact(row["subject"], row["relation"], row["object"])
        if fact.prompt in seen:
            raise DataError(f"{where}: the prompt {fact.prompt!r} already has an answer on line {seen[fact.prompt]}; "
                            "each subject and relation may appear once")
        seen[fact.prompt] = number
        facts.append(fact)
    if not facts:
        raise DataError(f"facts file {path} holds no facts; each line must be "
                        '{"subject": ..., "relation": ..., "object": ...}')
    return facts
