"""Test doubles for `autointerp` (its tests and its SAEBench comparison):

  - `rule_answer`: a deterministic judge. Asked for an explanation, it names the most often
    highlighted token ("This neuron activates on the token 'X'."); asked to detect, it lists the
    examples holding that token as a word of their text, or "None".
  - `JudgeServer`: an OpenAI-compatible chat endpoint on 127.0.0.1 (http.server in a thread,
    POST /v1/chat/completions) answering by that rule. It records every request's headers and body
    and misbehaves on demand, per token the rule lands on: stalls past the client's timeout, returns
    malformed JSON, refuses, answers with an HTTP error status, drops its first request unanswered;
    or wants an API key (401 without it); redirects every request elsewhere (307); echoes the
    request's Authorization header inside every explanation.
  - `WordLM`: a stand-in for LanguageModel over whitespace words (hashed ids, decodable), random
    embeddings plus a little of the causal running mean, so a latent can be planted on one word.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import torch
from helpers.probing_fakes import FakeLM

REFUSAL = "I'm sorry, but I can't help with that."


def explained_token(messages: list[dict]) -> tuple[str, str]:
    """(phase, token) the rule judge works with for this request."""
    system, user = messages[0]["content"], messages[1]["content"]
    if "<< ... >>" in system:
        marked = collections.Counter(t.strip() for t in re.findall(r"<<(.*?)>>", user) if t.strip())
        return "explanation", marked.most_common(1)[0][0] if marked else "nothing"
    return "detection", re.search(r"fires on the token '(.*?)'", user).group(1)


def rule_answer(messages: list[dict]) -> str:
    phase, token = explained_token(messages)
    if phase == "explanation":
        return f"This neuron activates on the token '{token}'."
    user = messages[1]["content"]
    hits = [m.group(1) for m in re.finditer(r"^(\d+)\. (.*)$", user, re.M) if token in m.group(2).split()]
    return ", ".join(hits) or "None"


class JudgeServer:
    def __init__(self, stall: set[str] = frozenset(), malformed: set[str] = frozenset(), refuse: set[str] = frozenset(),
                 stall_s: float = 2.0, require_key: str | None = None, refuse_all: bool = False, stall_all: bool = False,
                 status: dict[str, int] | None = None, flaky: set[str] = frozenset(), redirect_to: str | None = None,
                 echo_key: bool = False):
        self.stall, self.malformed, self.refuse, self.stall_s = set(stall), set(malformed), set(refuse), stall_s
        self.require_key, self.refuse_all, self.stall_all = require_key, refuse_all, stall_all
        self.status = dict(status or {})  # token -> HTTP error status for its explanation request
        self.flaky, self.dropped = set(flaky), set()  # tokens whose first request is dropped without a reply
        self.redirect_to, self.echo_key = redirect_to, echo_key  # 307 to redirect_to + path; key in each reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> JudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                            "body": body})
                if server.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", server.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if self.path != "/v1/chat/completions":
                    return self.reply(404, b'{"error": "not found"}')
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    return self.reply(401, b'{"error": {"message": "invalid api key"}}')
                phase, token = explained_token(body["messages"])
                if phase == "explanation" and token in server.flaky and token not in server.dropped:
                    server.dropped.add(token)
                    self.close_connection = True
                    return None
                if phase == "explanation" and token in server.status:
                    return self.reply(server.status[token], b'{"error": {"message": "overloaded"}}')
                if server.stall_all or token in server.stall:
                    time.sleep(server.stall_s)
                if phase == "explanation" and token in server.malformed:
                    return self.reply(200, b'{"choices": [{"message": ')
                refuse = server.refuse_all or (phase == "detection" and token in server.refuse)
                content = REFUSAL if refuse else rule_answer(body["messages"])
                if server.echo_key and phase == "explanation":  # quotes the request's credentials back
                    content = content.rstrip(".") + f" (auth: {self.headers.get('Authorization')})."
                doc = {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}]}
                self.reply(200, json.dumps(doc).encode())

            def reply(self, status: int, payload: bytes):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (timeout cases)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class WordTokenizer:
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.words = {0: "<pad>", 1: "<bos>", 2: "<eos>"}

    def id_of(self, word: str) -> int:
        i = 3 + zlib.crc32(word.encode()) % (self.vocab - 3)
        self.words.setdefault(i, word)  # a hash collision decodes as the first word seen
        return i

    def __call__(self, text: str, add_special_tokens: bool = False):
        return SimpleNamespace(input_ids=[self.id_of(w) for w in text.split()])

    def batch_decode(self, ids: list[list[int]], clean_up_tokenization_spaces: bool = False) -> list[str]:
        return [self.words.get(i, f"w{i}") if i < 3 else " " + self.words.get(i, f"w{i}") for (i,) in ids]


class WordLM(FakeLM):
    """probing_fakes.FakeLM with a tokenizer that decodes words back, and EOS special too."""

    def __init__(self, d_model: int = 64, vocab: int = 20_011, seed: int = 0):
        super().__init__(d_model, vocab, seed, mix=0.3, name="word-lm")
        self.tokenizer = WordTokenizer(vocab)

    def special_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        special = tokens < 3
        special[..., 0] = True
        return special
