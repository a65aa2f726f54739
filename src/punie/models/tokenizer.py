"""A byte-level BPE tokenizer with Qwen's special tokens and a Qwen-style chat template.

mlx-lm's server infers the `json_tools` parser from the template (and we also name it in
`tokenizer_config.json`), so `<tool_call>{"name": ..., "arguments": ...}</tool_call>` in the
model's output comes back to PydanticAI as OpenAI `tool_calls`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Control tokens the detokenizer may drop; the tool-call markers must survive decoding
# (the server's parser reads them), so they are added but not "special", as in Qwen.
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
TOOL_CALL = "<tool_call>"
MARKUP_TOKENS = [TOOL_CALL, "</tool_call>", "<tool_response>", "</tool_response>"]

# As Qwen's: a newline ends every role header, so the first answer token never merges with
# the role name (with word-level BPE, "assistantGreat" was one word and direct answers lost
# their first target token).
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "<|im_start|>system\n"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{%- endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{%- elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "<|im_start|>user\n{{ message.content }}<|im_end|>\n"
    "{%- elif message.role == 'assistant' %}"
    "<|im_start|>assistant\n"
    "{% if message.content %}{{ message.content }}{%- endif %}"
    "{%- if message.tool_calls %}"
    "{%- for tc in message.tool_calls %}"
    "{%- set tool_call = tc.function if tc.function is defined else tc %}"
    "{%- if message.content or not loop.first %}\n{%- endif %}"
    '<tool_call>\n{"name": "{{ tool_call.name }}", "arguments": '
    "{%- if tool_call.arguments is string %}{{ tool_call.arguments }}"
    "{%- else %}{{ tool_call.arguments | tojson }}{%- endif %}}\n</tool_call>"
    "{%- endfor %}"
    "{%- endif %}"
    "<|im_end|>\n"
    "{%- elif message.role == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, split_words: bool = True, whole: Sequence[str] = ()
) -> Tokenizer:
    """Train a byte-level BPE on `texts`; special and markup tokens get their own ids.

    `split_words=False` lets merges cross spaces and punctuation, so text that repeats in
    every example (the agent's instructions and tool schemas) becomes a few long tokens.
    `whole`: texts that become one token each (e.g. the agent's fixed system turn), taken out
    of `texts` before training so the BPE vocabulary goes to everything else.
    """
    whole = [w for w in whole if w]
    if whole:
        texts = [_without(t, whole) for t in texts]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_words)
    tok.decoder = decoders.ByteLevel()
    # Markup tokens are not given to the trainer: it would make them "special", and the
    # server's detokenizer drops special tokens, hiding <tool_call> from the tool parser.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    if whole:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in whole])
    return tok


def _without(text: str, parts: Sequence[str]) -> str:
    for part in parts:
        text = text.replace(part, "")
    return text


def control_token_ids(tok_json: dict) -> list[int]:
    """Ids of every token that must end generation: the chat markers (<|im_end|> first, the
    turn's end), <|endoftext|>, the tool-response and tool-call-end markers, and any whole-text
    token (a fixed system turn): none of them belongs inside an answer's text. <tool_call>
    is not one: it starts a tool call."""
    ids = {t["content"]: t["id"] for t in tok_json.get("added_tokens", [])}
    stop = [IM_END, ENDOFTEXT, IM_START, "<tool_response>", "</tool_response>", "</tool_call>"]
    out = [ids[t] for t in stop if t in ids]
    known = set(SPECIAL_TOKENS + MARKUP_TOKENS)
    out += [i for t, i in ids.items() if t not in known and not t.startswith(TOOL_CALL)]
    return out


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """Write tokenizer.json and a tokenizer_config.json that transformers and mlx-lm load."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "tool_parser_type": "json_tools",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": IM_END, "pad_token": ENDOFTEXT}, indent=2)
    )


def tokenizer_fingerprint(model_dir: Path) -> str:
    """Identity of a model's vocabulary: two models can share a draft only if these match."""

    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    vocab = tok.get("model", {}).get("vocab", {})
    added = sorted((t["id"], t["content"]) for t in tok.get("added_tokens", []))
    blob = json.dumps([sorted(vocab.items()), added], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
