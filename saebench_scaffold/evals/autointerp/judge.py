"""The judges `autointerp` asks: the embedded instruct model in process (the default: offline, no key)
or any OpenAI-compatible chat-completions endpoint (`judge_url`, else $OPENAI_BASE_URL), through the
`openai` client as SAEBench does.

A judge answers `complete(messages, max_tokens, form, n_examples)` with the reply's text. Failures:
  - `JudgeError`: this one request failed (no answer within the timeout, a reply that is not JSON or
    has no message, a refusal field, a content filter, a server error or dropped connection after
    the client's retries). The latent is skipped and the reason recorded; `transport` says whether
    the judge failed rather than answered.
  - `UserError`: the judge cannot be used at all (nothing listening, a redirect, credentials or
    endpoint refused, a key that would go over plain http to another host): the task stops with
    one line and writes no result.
The API key comes from the environment variable `judge_api_key_env` names, else $OPENAI_API_KEY; it is
sent as `Authorization: Bearer …` to the configured host only (never over plain http except to
localhost, never on a redirect) and kept nowhere else: not in the config, the result or a message;
every reply and error text has it replaced by *** before anyone stores or prints it.

The embedded judge (SmolLM2-135M-Instruct, greedy decoding) gets two helps a 135M model needs to
answer in SAEBench's format at all: its explanation starts with "This neuron activates on" (the
form of SAEBench's demos, which its parser expects) and stops at the first line break; its
detection answer is constrained to that format (example numbers 1..n separated by commas, or
"None"). The prompts are SAEBench's, unchanged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import urllib.parse

import torch

from ...settings import UserError

EMBEDDED_CATEGORY = "autointerp_embedded_judge"  # the embedded judge's headline: never under SAEBench's `autointerp`
EMBEDDED_WARNING = ("judged by the embedded SmolLM2-135M-Instruct: a 135M-parameter judge explains and detects far "
                    "worse than gpt-4o-mini, which judged SAEBench's published autointerp scores; these scores are not "
                    "comparable with those, only with other checkpoints judged by the same judge on the same settings. "
                    "In our runs its explanations mostly echo the prompt's demos and its detections list nearly every "
                    "example, so its score sits near `trivial_answers.all_active`: it checks the pipeline offline; "
                    "score checkpoints with an endpoint judge (autointerp.judge_url)")

EXPLANATION_START = "This neuron activates on"
KEY_LIKE = ("key", "token", "secret", "password", "sig", "auth")


class JudgeError(Exception):
    def __init__(self, reason: str, transport: bool = True):
        super().__init__(reason)
        self.reason, self.transport = reason, transport


def check_judge_url(url: str) -> str:
    """Refuse a URL that cannot be a chat endpoint or that carries credentials (they would be written
    into the result's config): the key belongs in the environment variable."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"judge_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {url!r}")
    if parts.username or parts.password:
        raise ValueError("judge_url must not carry credentials; put the API key in the environment variable "
                         "named by judge_api_key_env")
    names = [k.lower() for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    if any(word in k for k in names for word in KEY_LIKE):
        raise ValueError("judge_url must not carry a key in its query; put it in the environment variable "
                         "named by judge_api_key_env")
    return url


# ---- any OpenAI-compatible endpoint --------------------------------------------------------------

OPENAI_KEY_ENV, OPENAI_URL_ENV = "OPENAI_API_KEY", "OPENAI_BASE_URL"  # the openai client's own conventions


def is_local_host(host: str) -> bool:
    """localhost or a loopback address: the only hosts a key may travel to over plain http."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def judge_key(api_key_env: str) -> tuple[str | None, str]:
    """(the environment variable the key came from, the key): `api_key_env`, else $OPENAI_API_KEY."""
    for name in dict.fromkeys((api_key_env, OPENAI_KEY_ENV)):
        if os.environ.get(name):
            return name, os.environ[name]
    return None, ""


class HttpJudge:
    """An OpenAI-compatible endpoint through the `openai` client (SAEBench's): its retries (408, 409,
    429, 5xx, timeouts, dropped connections; `retries` further tries), timeout and request format.
    Two things it does not do by default and we need: it never follows a redirect (a 3xx is one error
    line: httpx would carry the key to a redirect on the same host, and the URL to use is the final
    one), and a key goes over plain http only to localhost."""

    kind = "openai_compatible"

    def __init__(self, url: str, model: str, api_key_env: str, timeout_s: float, retries: int, concurrency: int):
        import openai

        self.url, self.model, self.timeout_s, self.concurrency = url, model, timeout_s, concurrency
        self.key_env, self._key = judge_key(api_key_env)
        base = url.rstrip("/")
        self.base = base[:-len("/chat/completions")] if base.endswith("/chat/completions") else base
        self.endpoint = self.base + "/chat/completions"
        parts = urllib.parse.urlsplit(self.endpoint)
        if self._key and parts.scheme == "http" and not is_local_host(parts.hostname or ""):
            raise UserError(f"autointerp: will not send the API key in ${self.key_env} over plain http to "
                            f"{parts.hostname}; use an https judge_url (or no key for a keyless local server)")
        self.client = openai.OpenAI(base_url=self.base, api_key=self._key or "unused", timeout=timeout_s,
                                    max_retries=retries, http_client=openai.DefaultHttpxClient(follow_redirects=False))
        self.no_key = {} if self._key else {"extra_headers": {"Authorization": openai.Omit()}}

    def describe(self) -> dict:
        return {"kind": self.kind, "url": self.url, "endpoint": self.endpoint, "host": judge_host(self.url),
                "model": self.model, "api_key_env": self.key_env, "api_key_sent": bool(self._key),
                "client": "openai", "decoding": "the endpoint's defaults (SAEBench sets none)"}

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def check_reachable(self) -> None:
        """Something listens at the endpoint's host and port (no request is sent): a wrong URL fails
        here, before any checkpoint work, in one line."""
        parts = urllib.parse.urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=min(self.timeout_s, 10.0)).close()
        except OSError as err:
            raise UserError(f"autointerp: the judge at {self.url} is unreachable ({err.strerror or err}); "
                            "check autointerp.judge_url") from err

    def complete(self, messages: list[dict], max_tokens: int, form: str = "", n_examples: int = 0) -> str:
        """The reply's text, the key replaced by *** wherever the endpoint echoed it."""
        raw = self._post(messages, max_tokens)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise JudgeError(f"malformed JSON in the judge's reply: {self._scrub(raw)[:120]!r}")
        try:
            choice = doc["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"the judge's reply has no choices[0].message: {self._scrub(json.dumps(doc))[:120]}")
        if isinstance(message, dict) and message.get("refusal"):
            raise JudgeError(f"the judge refused: {self._scrub(str(message['refusal']))[:120]!r}", transport=False)
        if isinstance(choice, dict) and choice.get("finish_reason") == "content_filter":
            raise JudgeError("the endpoint's content filter withheld the answer", transport=False)
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise JudgeError("the judge's reply has no message content")
        return self._scrub(content).strip()

    def _post(self, messages: list[dict], max_tokens: int) -> str:
        """The raw reply body (parsed here, so a malformed reply is a recorded skip, not a crash)."""
        import openai

        try:
            reply = self.client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, n=1, max_tokens=max_tokens, **self.no_key)
            return reply.http_response.text
        except openai.APITimeoutError:
            raise JudgeError(f"no answer within {self.timeout_s:g} s (judge_timeout_s)") from None
        except openai.APIConnectionError as err:
            raise JudgeError(f"the connection to the judge broke ({type(err.__cause__ or err).__name__})") from None
        except openai.APIStatusError as err:
            code, detail = err.status_code, self._scrub(err.response.text)[:160].strip()
            location = self._scrub(err.response.headers.get("location", ""))
        if 300 <= code < 400:
            target = urllib.parse.urlsplit(urllib.parse.urljoin(self.endpoint, location))
            raise UserError(f"autointerp: the judge at {self.url} redirects (HTTP {code}) to {target.scheme}://"
                            f"{target.netloc}{target.path}; redirects are not followed (the key stays here): "
                            "set autointerp.judge_url to the final address")
        if code in (401, 403):
            raise UserError(f"autointerp: the judge at {self.url} refused the request (HTTP {code}); "
                            f"set the API key in ${self.key_env or OPENAI_KEY_ENV}")
        if code == 404:
            raise UserError(f"autointerp: HTTP 404 from {self.endpoint}: no chat-completions endpoint there, "
                            f"or no model {self.model!r} ({detail[:80]})")
        raise JudgeError(f"HTTP {code} from the judge: {detail[:120]}")


def judge_host(url: str | None) -> str:
    """What a result names its judge's endpoint by: host[:port] (no path, no query)."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2] if url else ""


# ---- the embedded instruct model ------------------------------------------------------------------

def answer_prefix_ok(text: str, n: int) -> bool:
    """Whether `text` can still grow into "None" or a list like "2, 5, 9" of numbers in 1..n."""
    if "None".startswith(text):
        return True
    parts = text.split(",")
    for j, part in enumerate(parts):
        body = part[1:] if j and part.startswith(" ") else part
        if body == "":
            if j < len(parts) - 1:
                return False
            continue
        if not (body.isascii() and body.isdigit()) or body[0] == "0" or int(body) > n:
            return False
    return True


def answer_complete(text: str, n: int) -> bool:
    return text == "None" or (answer_prefix_ok(text, n) and text[-1:].isdigit())


class EmbeddedJudge:
    kind = "embedded"
    concurrency = 1  # one process, one model: requests run one after another

    def __init__(self, lm):
        self.lm, self.tok = lm, lm.tokenizer
        self.eos = self.tok.eos_token_id
        # tokens an answer in SAEBench's detection format can be made of
        texts = {i: self.tok.decode([i]) for i in range(len(self.tok))}
        self.answer_tokens = {i: t for i, t in texts.items() if t and set(t) <= set("0123456789, None")}

    def describe(self) -> dict:
        return {"kind": self.kind, "model": "SmolLM2-135M-Instruct", "source": self.lm.source_id,
                "decoding": f"greedy; explanations start with {EXPLANATION_START!r} and end at the first line break; "
                            "detection answers constrained to SAEBench's format (numbers 1..n separated by commas, or None)"}

    def chat_ids(self, messages: list[dict], prefix: str = "") -> list[int]:
        """The chat template around the messages, their text tokenized as plain text: a special token's
        text inside an example (a context's BOS, shown as SAEBench shows it) stays text, not a turn marker."""
        marks = [f"\x00{i}\x00" for i in range(len(messages))]
        rest = self.tok.apply_chat_template([{**m, "content": mark} for m, mark in zip(messages, marks)],
                                            tokenize=False, add_generation_prompt=True)
        ids: list[int] = []
        for mark, message in zip(marks, messages):
            head, rest = rest.split(mark, 1)
            ids += self.tok(head, add_special_tokens=False).input_ids
            ids += self.tok(message["content"], add_special_tokens=False, split_special_tokens=True).input_ids
        return ids + self.tok(rest + prefix, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def complete(self, messages: list[dict], max_tokens: int, form: str = "explanation", n_examples: int = 0) -> str:
        from transformers import StoppingCriteria, StoppingCriteriaList

        from ..probes import small_ops

        prefix = EXPLANATION_START if form == "explanation" else ""
        ids = torch.tensor([self.chat_ids(messages, prefix)], device=self.lm.device)
        start = ids.shape[1]
        kw: dict = {}
        if form == "explanation":
            tok = self.tok
            max_tokens = max(1, max_tokens - len(tok(prefix, add_special_tokens=False).input_ids))  # the start counts

            class AtLineBreak(StoppingCriteria):
                def __call__(self, input_ids, scores, **_):
                    return torch.tensor(["\n" in tok.decode(input_ids[0, start:])], device=input_ids.device)

            kw["stopping_criteria"] = StoppingCriteriaList([AtLineBreak()])
        else:
            longest = ", ".join(str(i) for i in range(1, n_examples + 1))
            max_tokens = len(self.tok(longest, add_special_tokens=False).input_ids) + 1  # room for every number
            kw["prefix_allowed_tokens_fn"] = lambda _batch, seq: self._allowed(seq[start:], n_examples)
        with small_ops():  # one decoding step at a time: thread pools only add overhead on a shared CPU
            out = self.lm.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                      do_sample=False, pad_token_id=self.eos, **kw)
        text = self.tok.decode(out[0, start:], skip_special_tokens=True)
        return (prefix + text.split("\n", 1)[0]).strip()

    def _allowed(self, generated: torch.Tensor, n: int) -> list[int]:
        text = "".join(self.answer_tokens.get(int(i), "") for i in generated)
        allowed = [i for i, t in self.answer_tokens.items() if answer_prefix_ok(text + t, n)]
        return allowed + [self.eos] if answer_complete(text, n) or not allowed else allowed
