"""The new-wording query sets are independent of the corpus grammar.

wording.yaml is the held-out set of the final check: whoever tunes the corpus must not read it.
These tests only compute on it and never print its queries; a failure names the corpus frames
that matched (to be removed from the grammar), not the queries.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from punie.agent.queries import load_queries
from punie.models.corpus import make_specs, workspace_facts
from punie.models.wording import frame_patterns, matching_frames, ngram_overlap, tokens

ROOT = Path(__file__).resolve().parents[1]
FACTS = workspace_facts(ROOT / "data/workspace")
WORDING_SETS = ["wording_dev", "wording"]
SAMPLE = 20000  # generated corpus queries the n-gram overlap is measured against


@pytest.fixture(scope="module")
def patterns():
    return frame_patterns(FACTS)


@pytest.fixture(scope="module")
def sample_queries() -> list[str]:
    return [s.query for s in make_specs(SAMPLE, FACTS, seed=0, nonce_share=0.1)]


def _queries(name: str) -> list[str]:
    return [q.query for q in load_queries(ROOT / f"data/queries/{name}.yaml")]


def test_frame_patterns_recognise_what_the_corpus_generates(patterns) -> None:
    """The patterns model the generator: every generated query matches one, typos aside
    (a typo changes a frame word, about 6 % of queries)."""
    specs = make_specs(500, FACTS, seed=11, nonce_share=0.1)
    missed = [s.query for s in specs if not matching_frames(s.query, patterns)]
    assert len(missed) / len(specs) < 0.10, missed[:20]


def test_a_frame_pattern_matches_its_own_kind_of_query(patterns) -> None:
    assert matching_frames("Explain a mixin briefly please?", patterns)
    assert matching_frames("where's OrderViewSet defined", patterns)
    assert matching_frames("hey, open shop/urls.py please", patterns)
    # a topic slot does not swallow "in <context>" or "<a> or <b>": those are other frames
    frames = matching_frames("what's a mixin in drf", patterns)
    assert not any(p.frame == "what's {t}" for p in frames)
    assert tokens("What's in shop/urls.py?") == ("what", "s", "in", "shop", "urls", "py")


@pytest.mark.parametrize("name", WORDING_SETS)
def test_no_corpus_frame_produces_a_wording_query(name: str, patterns) -> None:
    matched = [matching_frames(q, patterns) for q in _queries(name)]
    count = sum(bool(m) for m in matched)
    frames = sorted({(p.family, p.frame) for m in matched for p in m})
    del matched  # never let pytest's assertion introspection show a held-out query
    if count:
        pytest.fail(f"{count} {name}.yaml queries match corpus frames {frames}", pytrace=False)


@pytest.mark.parametrize("name", WORDING_SETS)
def test_word_ngram_overlap_with_the_corpus(name: str, sample_queries) -> None:
    """Reported, not tuned: the share of the set's word 3-grams that a large sample of
    generated corpus queries contains (`pytest -s` prints it)."""
    overlap = ngram_overlap(_queries(name), sample_queries)
    print(f"\n{name}: word 3-gram overlap with {SAMPLE} corpus queries = {overlap:.3f}")
    assert 0.0 <= overlap < 0.8


def test_ngram_overlap_counts_shared_phrases() -> None:
    assert ngram_overlap(["find all the views"], ["please find all the views"]) == 1.0
    assert ngram_overlap(["find all the views"], ["find all views"]) == 0.0
    assert ngram_overlap(["find all the views now"], ["find all the models"]) == 1 / 3
