"""The grammar's question-answer facts, enumerated and split."""

from __future__ import annotations

from tokunify.data.corpus.facts import all_facts, candidates, split_facts
from tokunify.data.corpus.grammar import Grammar


def test_every_question_the_grammar_asks_is_listed_once():
    facts = all_facts()
    assert len(facts) == 121 + 20 + 12 + 12
    assert len({f.question for f in facts}) == len(facts)
    known = {(f.question, f.answer) for f in facts}
    g = Grammar(5)
    assert all(g.question() in known for _ in range(500))


def test_split_is_disjoint_deterministic_and_keeps_every_kind():
    facts = all_facts()
    a, b = split_facts(facts, 0.5, seed=0)
    assert {f.question for f in a}.isdisjoint(f.question for f in b)
    assert len(a) + len(b) == len(facts)
    assert {f.kind for f in a} == {f.kind for f in b} == {"plus", "after", "color", "legs"}
    assert split_facts(facts, 0.5, seed=0) == (a, b) and split_facts(facts, 0.5, seed=1) != (a, b)


def test_candidates_hold_the_answer_and_only_answers_of_its_kind():
    facts = all_facts()
    for f in facts:
        c = candidates(f, facts)
        assert f.answer in c and len(c) == len(set(c)) > 1
    color = next(f for f in facts if f.kind == "color" and "sky" in f.question)
    assert all(x.startswith("the sky is ") for x in candidates(color, facts))
    assert len(candidates(next(f for f in facts if f.kind == "plus"), facts)) == 21
