"""No secret ever leaves the sealed column: a full run, then a scan of everything it produced.

Unique test secrets travel every path a secret can take: a MariaDB password that is wrong (so it
flows through authentication failures), a PostgreSQL password that trust auth ignores (so it
reaches the driver and succeeds), a ``file:`` reference (resolved in the owner), an ``env:``
reference that does not resolve (an error path), passwords given and changed through the HTTP
API, an API key used for every API call and a forged one. The run goes through the CLI and the
Ray core (register, test, discover, health sweep, update, remove) and through the API (REST,
SSE job events, GraphQL, the WebSocket events feed). Then every file in the core's data dir
(logs, core.json, the SQLite store and its WAL), the Ray session's logs, every CLI output, every
API response and every event is searched for each secret, raw and base64- / hex-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from datawave.datasource.config import DatawaveSettings
from tests.fixtures.api import deploy_ready, undeploy

pytestmark = pytest.mark.ray

DATAWAVE = str(Path(sys.executable).with_name("datawave"))
RUN = uuid.uuid4().hex[:12]


def _secret(kind: str) -> str:
    return f"dw-leak-{kind}-{RUN}-{uuid.uuid4().hex[:8]}"


SECRETS: dict[str, str] = {
    "mysql password": _secret("my"),
    "mysql password (updated)": _secret("my2"),
    "postgresql password": _secret("pg"),
    "file-referenced password": _secret("file"),
    "api password": _secret("api"),
    "api password (patched)": _secret("api2"),
    "forged api key": f"dwk_{RUN}_{_secret('forged')}",
}


def forms(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    b64 = base64.b64encode(raw)
    return {
        "raw": raw,
        "base64": b64.rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode(),
    }


@dataclass
class Evidence:
    """Everything the run produced, by where it came from."""

    texts: dict[str, bytes] = field(default_factory=dict)

    def add(self, where: str, data: str | bytes) -> None:
        blob = data.encode() if isinstance(data, str) else data
        key, n = where, 1
        while key in self.texts:
            n += 1
            key = f"{where} #{n}"
        self.texts[key] = blob


def scan(evidence: Evidence, files: list[Path], secrets: dict[str, str]) -> list[str]:
    """Every occurrence as 'where @offset: context' with the secret masked."""
    hits: list[str] = []
    needles = [(name, form, needle) for name, s in secrets.items()
               for form, needle in forms(s).items()]  # fmt: skip

    def look(where: str, data: bytes) -> None:
        for name, form, needle in needles:
            start = data.find(needle)
            while start != -1:
                ctx = data[max(0, start - 60) : start + len(needle) + 60]
                ctx = ctx.replace(needle, f"<{name} ({form})>".encode())
                hits.append(f"{where} @{start}: {ctx.decode('utf-8', 'replace')!r}")
                start = data.find(needle, start + 1)

    for where, data in evidence.texts.items():
        look(where, data)
    for path in files:
        try:
            look(str(path), path.read_bytes())
        except OSError:
            continue  # a file removed while we walked (log rotation, a WAL checkpoint)
    return hits


def all_files(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for p in root.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    out.append(p)
    return out


def ray_session_dir() -> Path:
    import ray

    assert ray.is_initialized(), "the session core fixture connects this process to Ray"
    return Path(ray._private.worker._global_node.get_session_dir_path())


class Cli:
    def __init__(self, env: dict[str, str], evidence: Evidence) -> None:
        self.env = env
        self.evidence = evidence

    def __call__(
        self, *args: str, stdin: str | None = None, record_stdout: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([DATAWAVE, *args], env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        where = "cli: datawave " + " ".join(args)
        if record_stdout:
            self.evidence.add(f"{where} (stdout)", proc.stdout)
        self.evidence.add(f"{where} (stderr)", proc.stderr)
        return proc


class Api:
    def __init__(self, url: str, token: str, evidence: Evidence) -> None:
        self.http = httpx.Client(base_url=url, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        self.evidence = evidence

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        self.evidence.add(f"api: {method} {path} -> {r.status_code}", r.content)
        self.evidence.add(f"api: {method} {path} (headers)", str(dict(r.headers)))
        return r

    def wait_job(self, job_id: str) -> None:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=300) as r:
            body = b"".join(r.iter_bytes())
        self.evidence.add(f"api: SSE /v1/jobs/{job_id}/events", body)


class EventFeed:
    """The WebSocket events feed, read on a thread for the whole run."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.replace("http://", "ws://") + "/v1/events"
        self.token = token
        self.frames: list[str] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import websockets

        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            async with websockets.connect(self.url, open_timeout=60,
                                          additional_headers=headers) as ws:  # fmt: skip
                self.frames.append(str(await asyncio.wait_for(ws.recv(), 60)))
                self.ready.set()
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        self.frames.append(str(await asyncio.wait_for(ws.recv(), 0.5)))
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> EventFeed:
        self.thread.start()
        assert self.ready.wait(90), "the events feed did not open"
        assert self.error is None, f"events feed: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def api_url(core: dict[str, object], core_settings: DatawaveSettings) -> Iterator[str]:
    """The API on the session core, as `datawave up` deploys it (auth on)."""
    from ray import serve

    serve.shutdown()  # a Serve left by another package keeps its own port: start clean
    yield deploy_ready(core_settings)
    undeploy(core_settings)
    serve.shutdown()


def _pg_args(pg_db: Any) -> list[str]:
    return ["--type", "postgresql", "--set", f"host={pg_db.host}", "--set", f"port={pg_db.port}",
            "--set", f"user={pg_db.user}", "--set", f"database={pg_db.dbname}",
            "--set", f"databases={json.dumps([pg_db.dbname])}"]  # fmt: skip


def _my_args(my_db: Any) -> list[str]:
    return ["--type", "mysql", "--set", f"host={my_db.host}", "--set", f"port={my_db.port}",
            "--set", f"user={my_db.user}", "--set", f"schemas={json.dumps([my_db.dbname])}"]  # fmt: skip


def test_a_full_run_leaks_no_secret(
    core: dict[str, object],
    core_env: dict[str, str],
    core_settings: DatawaveSettings,
    client: Any,
    api_url: str,
    pg_db: Any,
    my_db: Any,
    tmp_path: Path,
) -> None:
    evidence = Evidence()
    cli = Cli({**core_env}, evidence)
    pg_db.execute("CREATE TABLE leak_t (id int PRIMARY KEY, v text)")
    my_db.execute("CREATE TABLE leak_t (id INT PRIMARY KEY, v TEXT)")
    ref_dir = tmp_path / f"dw-leak-path-{RUN}"
    ref_dir.mkdir()
    (ref_dir / "pw").write_text(SECRETS["file-referenced password"] + "\n")
    secrets = {
        **SECRETS,
        # References are sealed like secrets: they may name where the real one lives.
        "file reference": f"file:{ref_dir / 'pw'}",
        "env reference": f"env:DW_LEAK_ENV_{RUN.upper()}",
    }
    names = {k: f"leak-{k}-{RUN[:6]}" for k in ("my", "pg", "file", "env", "api")}

    # An API key, shown once by the CLI (that one stdout is the only place it may appear).
    made = cli("apikeys", "create", "--name", f"leak-{RUN}", "--role", "admin",
               record_stdout=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    secrets["api key"] = token
    api = Api(api_url, token, evidence)

    with EventFeed(api_url, token) as feed:
        # -- CLI and Ray core ---------------------------------------------------------------
        add = [
            ("my", _my_args(my_db), secrets["mysql password"]),
            ("pg", _pg_args(pg_db), secrets["postgresql password"]),
            ("file", _pg_args(pg_db), secrets["file reference"]),
            ("env", _my_args(my_db), secrets["env reference"]),
        ]
        for key, args, password in add:
            proc = cli("sources", "add", names[key], *args, "--secret", "password", "--json",
                       stdin=password + "\n")  # fmt: skip
            assert proc.returncode == 0, proc.stderr

        tested = {k: cli("sources", "test", names[k], "--json") for k in names if k != "api"}
        assert tested["pg"].returncode == 0, tested["pg"].stderr
        assert tested["file"].returncode == 0, tested["file"].stderr  # the reference resolved
        assert tested["my"].returncode == 1  # wrong password: authentication failed
        assert json.loads(tested["my"].stdout)["ok"] is False
        env_err = " ".join(tested["env"].stderr.split())
        assert "secret field 'password' cannot be resolved" in env_err, tested["env"].stderr

        for k in ("my", "pg", "file", "env"):
            cli("discover", names[k], "--json")
            cli("sources", "show", names[k], "--json")
        cli("health", "--sweep", "--json")
        cli("sources", "list", "--json")

        client.update(names["my"], {"config": {"password": secrets["mysql password (updated)"]}})
        cli("sources", "test", names["my"], "--json")
        cli("health", names["my"], "--json")

        # -- HTTP API -------------------------------------------------------------------------
        r = api("POST", "/v1/sources", json={"name": names["api"], "type": "mysql", "config": {
            "host": my_db.host, "port": my_db.port, "user": my_db.user,
            "password": secrets["api password"], "schemas": [my_db.dbname]}})  # fmt: skip
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        api("GET", f"/v1/sources/{sid}")
        api("POST", f"/v1/sources/{sid}/test")
        job = api("POST", f"/v1/sources/{sid}/discover")
        assert job.status_code == 202, job.text
        api.wait_job(job.json()["id"])
        api("GET", f"/v1/jobs/{job.json()['id']}")
        etag = api("GET", f"/v1/sources/{sid}").headers.get("etag")
        patched = api("PATCH", f"/v1/sources/{sid}",
                      json={"config": {"password": secrets["api password (patched)"]}},
                      headers={"If-Match": etag} if etag else {})  # fmt: skip
        assert patched.status_code == 200, patched.text
        api("POST", f"/v1/sources/{sid}/test")
        api("GET", "/v1/sources")
        api("POST", "/graphql", json={"query": "{ sources { items { name type } } }"})
        # A bad request carrying a secret must not echo it.
        api("POST", "/v1/sources", json={"name": f"bad {RUN}", "type": "mysql", "config": {
            "host": my_db.host, "port": "not-a-port", "password": secrets["api password"]}})  # fmt: skip
        forged = httpx.get(f"{api_url}/v1/sources", timeout=60,
                           headers={"Authorization": f"Bearer {secrets['forged api key']}"})  # fmt: skip
        evidence.add(f"api: forged key -> {forged.status_code}", forged.content)
        assert forged.status_code == 401
        api("GET", "/v1/audit?limit=500")
        api("DELETE", f"/v1/sources/{sid}")

        for k in ("my", "pg", "file", "env"):
            cli("sources", "remove", names[k])
        time.sleep(1.0)  # let the last events reach the feed
    for i, frame in enumerate(feed.frames):
        evidence.add(f"events feed frame {i}", frame)
    assert len(feed.frames) > 1, "the events feed saw nothing: the scan would prove little"

    cli("audit", "list", "--limit", "500", "--json")
    files = all_files(core_settings.data_dir, ray_session_dir() / "logs")
    hits = scan(evidence, files, secrets)

    # The scan looked at a real run and finds what is there: the token in the one output
    # allowed to show it, the source names in the store.
    assert len(files) > 5 and len(evidence.texts) > 40
    assert scan(Evidence({"apikeys create (stdout)": made.stdout.encode()}), [], {"k": token})
    assert scan(Evidence(), files, {"name": names["pg"]})
    assert hits == [], "secrets leaked:\n" + "\n".join(hits[:50])
