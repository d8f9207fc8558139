"""Caption parser: mentions, grammaticality and truthfulness of any caption text."""

from __future__ import annotations

from dataclasses import dataclass

from listener_sub.world.grammar import (
    ADJECTIVE_ORDER,
    END,
    POSITION_PHRASES,
    PREFIXES,
    RELATIONS,
    CaptionSpec,
    article,
)
from listener_sub.world.vocab import WORLD_VOCAB, Vocabulary

PARSE_MEMO = 1 << 16  # parses remembered per vocabulary; past it, the memo starts afresh


@dataclass(frozen=True)
class ParsedCaption:
    """A caption read back: what it mentions, words outside the grammar, and whether it parses."""

    spec: CaptionSpec  # for ungrammatical text: every value word found, as one noun phrase
    unknown: tuple[str, ...]
    grammatical: bool

    def mentioned(self) -> set[str]:
        return self.spec.mentioned()


def tokenize(text: str) -> list[str]:
    """Lower-case words, with the final full stop as its own token."""
    text = text.strip().lower()
    words = text[: -len(END)].split() if text.endswith(END) else text.split()
    return [*words, END] if text.endswith(END) else words


class _Grammar:
    """Recursive-descent parser for the caption grammar of one vocabulary."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.values = vocab.word_to_value()
        self.prefixes = [p.split() for p in PREFIXES]
        self.positions = {tuple(p.split()): v for v, p in POSITION_PHRASES.items()}
        self.relations = {tuple(p.split()): v for v, p in RELATIONS.items()}
        function_words = {w for p in [*PREFIXES, *POSITION_PHRASES.values(), *RELATIONS.values()] for w in p.split()}
        self.lexicon = set(self.values) | function_words | {"a", "an", vocab.generic_noun, END}
        self.parsed: dict[str, ParsedCaption] = {}  # text -> its parse (captions repeat: RL samples, evaluations)

    def _phrase_at(self, toks: list[str], i: int, table: dict[tuple[str, ...], str]) -> tuple[str, int] | None:
        for words, value in table.items():
            if tuple(toks[i : i + len(words)]) == words:
                return value, i + len(words)
        return None

    def _noun_phrase(self, toks: list[str], i: int, allow_position: bool) -> tuple[dict[str, str], int] | None:
        if i >= len(toks) or toks[i] not in ("a", "an"):
            return None
        det, i = toks[i], i + 1
        obj: dict[str, str] = {}
        first_word = toks[i] if i < len(toks) else ""
        last_rank = -1
        while i < len(toks) and toks[i] in self.values and self.values[toks[i]][0] in ADJECTIVE_ORDER:
            attr = self.values[toks[i]][0]
            rank = ADJECTIVE_ORDER.index(attr)
            if rank <= last_rank:
                return None
            obj[attr], last_rank, i = toks[i], rank, i + 1
        if i >= len(toks):
            return None
        if toks[i] in self.values and self.values[toks[i]][0] == "shape":
            obj["shape"] = toks[i]
        elif toks[i] != self.vocab.generic_noun:
            return None
        i += 1
        if det != article(first_word):
            return None
        if allow_position:
            found = self._phrase_at(toks, i, self.positions)
            if found:
                obj["position"], i = found
        return obj, i

    def parse_spec(self, toks: list[str]) -> CaptionSpec | None:
        """The spec of a grammatical token list, else None."""
        if not toks or toks[-1] != END:
            return None
        body = toks[:-1]
        for prefix_index in sorted(range(len(PREFIXES)), key=lambda p: -len(self.prefixes[p])):
            words = self.prefixes[prefix_index]
            if body[: len(words)] != words:
                continue
            spec = self._body(body, len(words), prefix_index)
            if spec is not None:
                return spec
        return None

    def _body(self, toks: list[str], i: int, prefix: int) -> CaptionSpec | None:
        first = self._noun_phrase(toks, i, allow_position=True)
        if first is None:
            return None
        obj, i = first
        if i == len(toks):
            return CaptionSpec((obj,), None, prefix)
        relation = self._phrase_at(toks, i, self.relations)
        if relation is None or "position" in obj:
            return None
        second = self._noun_phrase(toks, relation[1], allow_position=False)
        if second is None or second[1] != len(toks):
            return None
        return CaptionSpec((obj, second[0]), relation[0], prefix)

    def parse(self, text: str) -> ParsedCaption:
        if text not in self.parsed:
            if len(self.parsed) >= PARSE_MEMO:
                self.parsed.clear()
            self.parsed[text] = self._parse(text)
        return self.parsed[text]

    def _parse(self, text: str) -> ParsedCaption:
        toks = tokenize(text)
        unknown = tuple(t for t in toks if t not in self.lexicon)
        spec = self.parse_spec(toks)
        if spec is not None:
            return ParsedCaption(spec, unknown, True)
        bag = {self.values[t][0]: t for t in toks if t in self.values}
        return ParsedCaption(CaptionSpec((bag,)), unknown, False)


_GRAMMARS: dict[int, _Grammar] = {}  # id(vocabulary) -> its parser; vocabularies are module constants


def _grammar(vocab: Vocabulary) -> _Grammar:
    if id(vocab) not in _GRAMMARS or _GRAMMARS[id(vocab)].vocab is not vocab:
        _GRAMMARS[id(vocab)] = _Grammar(vocab)
    return _GRAMMARS[id(vocab)]


def parse(text: str, vocab: Vocabulary = WORLD_VOCAB) -> ParsedCaption:
    """Parse a caption; never raises (ungrammatical text gives its bag of value words)."""
    return _grammar(vocab).parse(text)


def grammatical(text: str, vocab: Vocabulary = WORLD_VOCAB) -> bool:
    return parse(text, vocab).grammatical


def _matches(phrase: dict[str, str], obj: dict[str, str]) -> bool:
    return all(obj.get(a) == v for a, v in phrase.items())


def truthful(
    text: str, objects: list[dict[str, str]], x: list[float] | None = None, vocab: Vocabulary = WORLD_VOCAB
) -> bool:
    """Every value the caption mentions is true of the scene.

    objects[0] is the referent: a single noun phrase must match it; a relation needs objects[0] to
    match the first phrase and some other object the second, on the stated side (x: centres).
    Ungrammatical text is judged by its value words against the referent.
    """
    spec = parse(text, vocab).spec
    if not _matches(spec.objects[0], objects[0]):
        return False
    if spec.relation is None:
        return True
    if x is None:
        raise ValueError("a relation caption needs the object centres x to be judged")
    for other in range(1, len(objects)):
        side = "left" if x[0] < x[other] else "right"
        if side == spec.relation and _matches(spec.objects[1], objects[other]):
            return True
    return False
