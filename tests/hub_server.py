"""A small in-memory Hugging Face Hub for tests, built on the standard library's HTTP server.

It implements only the endpoints that ``huggingface_hub`` uses to create a model repo, push a
folder and read it back (``from_pretrained``, ``ModelCard.load``), as listed in
``shared/DESIGN.md``:

- ``POST /api/repos/create`` (409 when the repo exists)
- ``POST /api/validate-yaml``
- ``POST /api/models/{repo}/preupload/{rev}`` (every file is ``uploadMode: "regular"`` so the
  client never goes to LFS or xet storage)
- ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: header, base64 files, deletions)
- ``GET /api/models/{repo}[/revision/{rev}]`` and ``GET /api/models/{repo}/tree/{rev}[/{path}]``
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length``
  and ``X-Error-Code`` on 404s
- ``GET /api/whoami-v2``
- ``GET /api/agent-harnesses`` (huggingface_hub fetches this registry once for its user agent;
  answered empty)

Tokens are checked against an allow-list: an unknown token gets a 401 with the Hub's
"Invalid credentials" message. Private repos are invisible (404 ``RepoNotFound``) to anyone
but their owner. Any request the server does not know is answered 404 and recorded in
``HubState.unhandled`` so a test can tell a missing endpoint from a client bug.

Usage::

    with HubTestServer(tokens={"hf_good": "alice"}) as server:
        server.url  # "http://127.0.0.1:PORT"
        server.state.repos["alice/model"].files  # {"config.json": b"...", ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The object id git gives a blob; the Hub uses it as ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    # commit sha -> {path: content}; `head` is the sha of main
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    head: str = ""
    commit_messages: list[str] = field(default_factory=list)

    @property
    def files(self) -> dict[str, bytes]:
        return self.snapshots[self.head]

    def commit(self, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{self.repo_id}:{len(self.snapshots)}:{message}".encode()).hexdigest()
        self.snapshots[sha] = files
        self.head = sha
        self.commit_messages.append(message)
        return sha

    def snapshot(self, revision: str) -> dict[str, bytes] | None:
        if revision == "main":
            return self.files
        return self.snapshots.get(revision)


@dataclass
class HubState:
    """Everything the server knows; tests read it to check what reached the 'Hub'."""

    tokens: dict[str, str]  # token -> user name
    repos: dict[str, Repo] = field(default_factory=dict)
    create_requests: list[dict] = field(default_factory=list)
    # set to an HTTP status to make every preupload fail (an upload that breaks after the repo exists)
    fail_uploads_with: int | None = None
    unhandled: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HubError(Exception):
    """Aborts a request with an HTTP error answered the way the Hub answers it."""

    def __init__(self, status: int, message: str, error_code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.error_code, self.extra = status, message, error_code, extra


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no handler thread outlives its response.
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    # --- plumbing -------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    @property
    def state(self) -> HubState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.query = parse_qs(parts.query)
        body = self._read_body()
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(path)
                if route_method == method and match:
                    with self.state.lock:
                        status, payload, headers = getattr(self, "_" + name)(match.groupdict(), body)
                    break
            else:
                self.state.unhandled.append(f"{method} {self.path}")
                raise HubError(404, f"Unknown endpoint {method} {path}")
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            status, payload = err.status, {"error": err.message, **err.extra}
        self._send(method, status, payload, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, method: str, status: int, payload, headers: dict) -> None:
        if isinstance(payload, (bytes, bytearray)):
            data, content_type = bytes(payload), "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", content_type))
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    # --- auth and lookups -----------------------------------------------------------------
    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            if required:
                raise HubError(401, INVALID_CREDENTIALS)
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.state.tokens:
            raise HubError(401, INVALID_CREDENTIALS)
        return self.state.tokens[token]

    def _repo(self, repo_id: str, user: str | None) -> Repo:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_id: str) -> Repo:
        user = self._user(required=True)
        repo = self._repo(repo_id, user)
        if repo.owner != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _snapshot(self, repo: Repo, rev: str) -> dict[str, bytes]:
        files = repo.snapshot(unquote(rev))
        if files is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return files

    # --- endpoints ------------------------------------------------------------------------
    def _create_repo(self, _, body):
        user = self._user(required=True)
        request = json.loads(body or b"{}")
        self.state.create_requests.append(request)
        if request.get("type", "model") != "model":
            raise HubError(400, "This test server only hosts model repos")
        repo_id = f"{request.get('organization') or user}/{request['name']}"
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.state.repos:
            # the Hub's 409 carries the url: create_repo(exist_ok=True) returns it
            raise HubError(409, "You already created this model repo", url=url)
        if request.get("organization") not in (None, user):
            raise HubError(403, f"You don't have the rights to create a repo under {request['organization']}")
        private = request.get("visibility") == "private" or bool(request.get("private"))
        repo = Repo(repo_id=repo_id, owner=user, private=private)
        repo.commit({".gitattributes": GITATTRIBUTES}, "initial commit")
        self.state.repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _validate_yaml(self, _, body):
        import yaml  # a dependency of the package under test; the server itself needs it only here

        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        if match is None:
            raise HubError(400, "No YAML metadata block found")
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            raise HubError(400, f"Invalid YAML: {err}") from err
        if not isinstance(metadata, dict):
            raise HubError(400, "YAML metadata must be a mapping")
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, groups, body):
        repo = self._writable_repo(groups["repo"])
        if self.state.fail_uploads_with is not None:
            raise HubError(self.state.fail_uploads_with, "Upload refused by the test server")
        files = self._snapshot(repo, groups["rev"])
        answer = []
        for item in json.loads(body)["files"]:
            existing = files.get(item["path"])
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                }
            )
        return 200, {"files": answer, "commitOid": repo.head}, {}

    def _commit(self, groups, body):
        repo = self._writable_repo(groups["repo"])
        files = dict(self._snapshot(repo, groups["rev"]))
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.head:
                    raise HubError(412, "parentCommit is not the head of the branch")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "Only base64 file content is supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(prefix)}
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} (LFS/xet are not served here)")
        sha = repo.commit(files, summary)
        return 200, {"commitUrl": f"{self.server.url}/{repo.repo_id}/commit/{sha}", "commitOid": sha}, {}

    def _model_info(self, groups, _):
        repo = self._repo(groups["repo"], self._user(required=False))
        rev = groups.get("rev") or "main"
        files = self._snapshot(repo, rev)
        sha = repo.head if rev == "main" else unquote(rev)
        return (
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.owner,
                "sha": sha,
                "private": repo.private,
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "tags": [],
                "siblings": [{"rfilename": path} for path in sorted(files)],
            },
            {},
        )

    def _tree(self, groups, _):
        repo = self._repo(groups["repo"], self._user(required=False))
        files = self._snapshot(repo, groups["rev"])
        prefix = (groups.get("path") or "").strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folders.add(f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0])
                continue
            if recursive:
                parents = path.split("/")[:-1]
                ancestors = ("/".join(parents[: i + 1]) for i in range(len(parents)))
                folders.update(folder for folder in ancestors if folder != prefix and folder.startswith(prefix))
            entries.append({"type": "file", "path": path, "size": len(files[path]), "oid": git_blob_sha1(files[path])})
        entries += [{"type": "directory", "path": folder, "oid": "0" * 40, "size": 0} for folder in sorted(folders)]
        return 200, entries, {}

    def _whoami(self, *_):
        user = self._user(required=True)
        return 200, {"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}}, {}

    def _agent_harnesses(self, *_):
        return 200, {"standardEnvVars": [], "harnesses": {}}, {}

    def _resolve(self, groups, _):
        repo = self._repo(groups["repo"], self._user(required=False))
        files = self._snapshot(repo, groups["rev"])
        sha = repo.head if unquote(groups["rev"]) == "main" else unquote(groups["rev"])
        content = files.get(groups["path"])
        if content is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(content)}"'}
        return 200, content, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    url: str


class HubTestServer:
    """Runs the in-memory Hub on 127.0.0.1 with an ephemeral port in a background thread."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.state = HubState(tokens=dict(tokens or {}))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return self._server.url

    def start(self) -> HubTestServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self.state
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> HubTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
