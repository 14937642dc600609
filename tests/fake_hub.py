"""A Hugging Face hub on 127.0.0.1 for tests: the `resolve` endpoint hf_hub_download calls, nothing more.

huggingface_hub 2.4 asks `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` for the file's commit
(X-Repo-Commit), ETag and Content-Length, then GETs the same URL. No X-Xet-* headers are sent, so it
never takes its Xet path. Errors carry the X-Error-Code the real hub sends (RepoNotFound, GatedRepo,
EntryNotFound), which huggingface_hub turns into its typed errors. Every request is counted.

    with FakeHub({"someone/sdxl": {"model_index.json": {...}, "unet/config.json": {...}}},
                 refusals={"someone/gated": (401, "GatedRepo")}, stalls={"someone/slow": 30.0}) as hub:
        env = {"HF_ENDPOINT": hub.url, ...}
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, Any]], refusals: dict[str, tuple[int, str | None]] | None = None,
                 stalls: dict[str, float] | None = None):
        self.stalls = stalls or {}  # repo -> seconds to sit on a request before answering it
        self.repos = {repo: {name: json.dumps(body).encode() for name, body in files.items()}
                      for repo, files in repos.items()}
        self.refusals = refusals or {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request."""
        with self._lock:
            self.requests.append((method, path))
        owner, _, rest = path.lstrip("/").partition("/")
        name, _, rest = rest.partition("/")
        kind, _, rest = rest.partition("/")
        _revision, _, filename = rest.partition("/")
        repo = f"{owner}/{name}"
        if kind != "resolve" or not filename:
            return 404, {}, b""
        time.sleep(self.stalls.get(repo, 0.0))
        if repo in self.refusals:
            status, code = self.refusals[repo]
            return status, {"X-Error-Code": code} if code else {}, b""
        if repo not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        commit = hashlib.sha1(repo.encode()).hexdigest()  # one fixed commit per repo
        body = self.repos[repo].get(filename)
        if body is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(body).hexdigest()}"',
                     "Content-Type": "application/json"}, body


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, with_body: bool) -> None:
            status, headers, body = hub.answer(self.command, self.path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._reply(with_body=False)

        def do_GET(self) -> None:
            self._reply(with_body=True)

        def log_message(self, *args) -> None:
            pass  # quiet: the test reads hub.requests

    return Handler
