"""A real Git server for the GitOps tests: ``git http-backend`` (smart HTTP) behind basic auth.

``GitServer.start(root)`` serves the bare repositories under ``root`` on
127.0.0.1 (a free port) from a thread. Every request must carry the server's
basic-auth user and password (401 otherwise, as a hosted Git server answers);
the request is then handed to git's own CGI program, ``git http-backend``,
exactly as Apache or nginx would, so clients (git, Flux's source-controller
with go-git) speak the real smart-HTTP protocol to the real server side:
upload-pack for fetches, receive-pack for pushes.

``create_repo(name)`` makes an empty bare repository; ``commit(name, files,
message)`` clones it over HTTP, writes ``files``, commits and pushes, and
returns the new commit's id. Requests are kept (method, path, user) for tests
that check who fetched.

``before_next_push(name, files, message)`` makes the next push to ``name``
race deterministically: when that push reaches the server (after its client
read the branch head), the server first commits ``files`` itself, so the
push is not a fast-forward and is refused, as a hosted server refuses a push
that lost a race. It returns the event set once the other commit landed.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

GIT_ENV = {
    # No user or system config, no prompts: the tests' git is the same everywhere.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.test",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.test",
}


def git(*args: str, cwd: Path | None = None, home: Path | None = None) -> str:
    """Run git with the tests' environment; its stdout (raises with stderr on failure)."""
    env = {**os.environ, **GIT_ENV}
    if home is not None:
        env["HOME"] = str(home)
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user: str
    status: int


@dataclass
class GitServer:
    server: ThreadingHTTPServer
    root: Path
    user: str
    password: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # repository -> what to do once, when the next push to it arrives
    push_hooks: dict[str, Callable[[], None]] = field(default_factory=dict)
    raced: list[str] = field(default_factory=list)  # commits pushed by those hooks

    @classmethod
    def start(cls, root: Path) -> GitServer:
        root.mkdir(parents=True, exist_ok=True)
        holder: dict[str, GitServer] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                holder["s"].handle_git(self)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                holder["s"].handle_git(self)

            def log_message(self, *args: Any) -> None:  # kept in .requests instead
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        git_server = cls(server, root, "flux", secrets.token_urlsafe(12))
        holder["s"] = git_server
        threading.Thread(target=server.serve_forever, name="git-server", daemon=True).start()
        return git_server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def repo_url(self, name: str, *, with_credentials: bool = False) -> str:
        if not with_credentials:
            return f"{self.url}/{name}.git"
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.server.server_address[1]}/{name}.git"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the server side ----------------------------------------------------------------------

    def _authorised(self, header: str | None) -> str:
        """The user of a valid ``Authorization: Basic`` header, or ""."""
        if not header or not header.startswith("Basic "):
            return ""
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return ""
        ok = secrets.compare_digest(user, self.user) and secrets.compare_digest(
            password, self.password)
        return user if ok else ""

    def _record(self, handler: BaseHTTPRequestHandler, user: str, status: int) -> None:
        with self.lock:
            self.requests.append(Request(handler.command, handler.path, user, status))

    def handle_git(self, handler: BaseHTTPRequestHandler) -> None:
        user = self._authorised(handler.headers.get("Authorization"))
        if not user:
            self._record(handler, "", 401)
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="git"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = self._request_body(handler)
        path = urlsplit(handler.path)
        if handler.command == "POST" and path.path.endswith("/git-receive-pack"):
            name = path.path.strip("/").removesuffix("/git-receive-pack").removesuffix(".git")
            with self.lock:
                hook = self.push_hooks.pop(name, None)
            if hook is not None:
                hook()
        env = {
            **GIT_ENV,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": path.path,
            "QUERY_STRING": path.query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,  # receive-pack (push) is served to authenticated users only
            "REMOTE_ADDR": handler.client_address[0],
        }
        for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                            ("Git-Protocol", "GIT_PROTOCOL")):
            if handler.headers.get(header):
                env[var] = handler.headers[header]
        done = subprocess.run(["git", "http-backend"], input=body, env=env,
                              capture_output=True, timeout=120, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if done.returncode and not done.stdout:
            status, payload = 500, done.stderr
        self._record(handler, user, status)
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _request_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # git sends large pushes chunked.
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))

    # --- the client side, for tests ------------------------------------------------------------

    def create_repo(self, name: str) -> None:
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.root / f"{name}.git"))

    def before_next_push(self, name: str, files: dict[str, str], message: str) -> threading.Event:
        """Commit ``files`` to ``name`` just before the next push to it is served."""
        done = threading.Event()

        def race() -> None:
            self.raced.append(self.commit(name, files, message))
            done.set()

        with self.lock:
            self.push_hooks[name] = race
        return done

    def commit(self, name: str, files: dict[str, str], message: str, *,
               branch: str = "main") -> str:
        """Clone ``name`` over HTTP, write ``files``, commit and push; the new commit's id."""
        work = Path(tempfile.mkdtemp(prefix="git-client-"))
        try:
            url = self.repo_url(name, with_credentials=True)
            git("clone", "--quiet", url, str(work / "repo"), home=work)
            repo = work / "repo"
            git("checkout", "--quiet", "-B", branch, cwd=repo, home=work)
            for rel, text in files.items():
                target = repo / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            git("add", "--all", cwd=repo, home=work)
            git("commit", "--quiet", "-m", message, cwd=repo, home=work)
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=repo, home=work)
            return git("rev-parse", "HEAD", cwd=repo, home=work).strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)
