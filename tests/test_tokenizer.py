"""The bootstrap tokenizer keeps Qwen's special and markup tokens whole."""

from __future__ import annotations

import pytest

from punie.models.tokenizer import (
    MARKUP_TOKENS,
    SPECIAL_TOKENS,
    control_token_ids,
    train_tokenizer,
)

TEXTS = [
    "<|im_start|>system\nYou are Punie.<|im_end|>\n<|im_start|>user\nFind all views<|im_end|>\n"
    '<|im_start|>assistant<tool_call>\n{"name": "run_command", "arguments": '
    '{"command": "grep -rn \\"class .*View\\" ."}}\n</tool_call><|im_end|>\n',
    "<|im_start|>user\n<tool_response>\n./orders/views.py:14:class OrderViewSet\n"
    "</tool_response><|im_end|>\n<|im_start|>assistant Sure! I found 1 match.<|im_end|>\n",
] * 20


@pytest.mark.parametrize("split_words", [True, False])
def test_special_tokens_round_trip(split_words: bool) -> None:
    tok = train_tokenizer(TEXTS, vocab_size=400, split_words=split_words)
    for t in SPECIAL_TOKENS + MARKUP_TOKENS:
        ids = tok.encode(t).ids
        assert len(ids) == 1, t
        assert tok.id_to_token(ids[0]) == t
    for text in TEXTS[:2]:
        ids = tok.encode(text).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        # Markup survives the decoding the server does (it drops only special tokens).
        kept = tok.decode(ids, skip_special_tokens=True)
        assert all(m in kept for m in MARKUP_TOKENS if m in text)
        assert not any(s in kept for s in SPECIAL_TOKENS)


def test_merges_across_words_compress_repeated_text() -> None:
    words = train_tokenizer(TEXTS, vocab_size=700, split_words=True)
    spans = train_tokenizer(TEXTS, vocab_size=700, split_words=False)
    assert len(spans.encode(TEXTS[0]).ids) < len(words.encode(TEXTS[0]).ids)


def test_a_whole_text_becomes_one_token_and_a_stop_token() -> None:
    system = "system\nYou are Punie.\n# Tools\n<tools>{}</tools>\n<tool_call>x</tool_call>"
    texts = [f"<|im_start|>{system}<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n"] * 20
    tok = train_tokenizer(texts, vocab_size=300, split_words=True, whole=[system])
    ids = tok.encode(texts[0]).ids
    assert tok.id_to_token(ids[1]) == system  # <|im_start|>, then the whole system turn
    assert tok.decode(ids, skip_special_tokens=False) == texts[0]
    import json

    stops = control_token_ids(json.loads(tok.to_str()))
    names = {tok.id_to_token(i) for i in stops}
    assert names == {"<|im_end|>", "<|endoftext|>", "<|im_start|>", "<tool_response>",
                     "</tool_response>", "</tool_call>", system}  # fmt: skip
    assert tok.id_to_token(stops[0]) == "<|im_end|>" and "<tool_call>" not in names


def test_the_role_header_ends_with_a_newline_before_any_answer() -> None:
    from jinja2 import Template

    from punie.models.tokenizer import CHAT_TEMPLATE

    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Great!"}]
    full = Template(CHAT_TEMPLATE).render(messages=messages, tools=None)
    prompt = Template(CHAT_TEMPLATE).render(
        messages=messages[:1], tools=None, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert full.startswith(prompt) and full[len(prompt) :] == "Great!<|im_end|>"
