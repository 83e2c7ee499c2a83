"""Every resource of a box counted and every secret out of its reach (issue 24): the memory of the
processes a proof starts, the box's host uid, secrets replaced by rename, the decode helper's
environment, work before authentication, and what ExportAst leaves behind."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kimina_grpc.client import AsyncKiminaClient, KiminaClient, Proof, Verdict
from kimina_grpc.repl import sandbox
from kimina_grpc.repl.decode import INLINE_BYTES
from kimina_grpc.testing import fake_ast_export_command, free_port, serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually_sync
from .helpers.sandbox import KEY, app_with, proof

SETPRIV = shutil.which("setpriv")
ROOT = os.geteuid() == 0


@pytest.fixture
def outside() -> Iterator[Path]:
    """A world-readable directory outside /tmp (the box replaces /tmp with its own)."""
    path = Path(tempfile.mkdtemp(prefix="kimina-test-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- 4: the memory of the processes a proof starts --------------------------------------------------


async def test_the_memory_of_children_a_proof_starts_counts_against_the_limit() -> None:
    # Two children of 200 MiB each, started after the REPL's tree was first seen: together past the
    # 300 MiB limit, each alone and the REPL under it.
    async with app_with(max_repls=1, max_repl_rss=300 << 20) as (_, client):
        [result] = await client.verify([Proof("kids", proof("children 2 200 60"))], timeout=120, diagnostics=True)
        assert (await client.server_info()).memory_accounting == "process-tree"
    assert result.verdict is Verdict.OUT_OF_MEMORY, (result.verdict, result.error)
    assert result.diagnostics is not None and result.diagnostics.peak_memory_bytes > 300 << 20


async def test_the_reported_peak_counts_the_children_a_proof_starts() -> None:
    # No memory limit: the peak in the diagnostics was the REPL's own (30 MiB for 2.87 GiB).
    async with app_with(max_repls=1) as (_, client):
        [result] = await client.verify([Proof("kids", proof("children 2 100 2"))], timeout=120, diagnostics=True)
    assert result.verdict is Verdict.VALID, result.error
    assert result.diagnostics is not None and result.diagnostics.peak_memory_bytes > 200 << 20


# ---- 5: the box's host uid --------------------------------------------------------------------------

REPO = str(Path(__file__).resolve().parents[1])
BWRAP = shutil.which("bwrap")
FAKE = "kimina_grpc.testing.fake_repl"


def _nobody_stand_in() -> str | None:
    """A stand-in REPL command that uid nobody can run (the test interpreter may be root's alone,
    as pyenv's under /root): the system's python3 with this checkout and its packages on its path.
    None if there is none (the checkout is not readable by others, no system python3 of a version
    the packages fit)."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or SETPRIV is None:
        return None
    path = [REPO, sysconfig.get_paths()["purelib"]]  # this checkout and its virtualenv's packages
    boot = f"import runpy, sys; sys.path[:0] = {path!r}; runpy.run_module({FAKE!r}, run_name='__main__')"
    load = f"import sys; sys.path[:0] = {path!r}; import {FAKE}"
    check = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "--", system, "-c", load]
    if subprocess.run(check, capture_output=True, check=False, cwd="/").returncode != 0:
        return None
    return shlex.join([system, "-c", boot])


NOBODY_REPL = _nobody_stand_in() if ROOT else None
NOBODY_EXPORT = NOBODY_REPL.replace(FAKE, "kimina_grpc.testing.fake_ast_export") if NOBODY_REPL else None


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
@pytest.mark.skipif(ROOT and NOBODY_REPL is None, reason="no python3 and checkout that uid nobody can run")
async def test_a_root_servers_box_cannot_read_root_only_files(outside: Path) -> None:
    secret = outside / "root-only"
    secret.write_text("the root-only secret")
    secret.chmod(0o600)
    public = outside / "public"
    public.write_text("world-readable")
    public.chmod(0o644)
    code = proof(f"read {secret}", f"read {public}", "environ self")
    async with app_with(sandbox="bwrap", sandbox_uid=65534, repl_command=NOBODY_REPL, project_dir=outside) as (
        app,
        client,
    ):
        [result] = await client.verify([Proof("shadow", code)], timeout=60)
        warnings = app.posture.warnings
    texts = [m.text for m in result.messages]
    assert result.verdict is Verdict.VALID, (result.error, texts)
    [denied] = [t for t in texts if t.startswith(f"read {secret}")]
    [allowed] = [t for t in texts if t.startswith(f"read {public}")]
    assert "Permission denied" in denied and "root-only secret" not in denied, denied
    assert "world-readable" in allowed, allowed
    assert not any("SANDBOX_UID" in w for w in warnings), warnings


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
@pytest.mark.skipif(ROOT and NOBODY_REPL is None, reason="no python3 and checkout that uid nobody can run")
async def test_the_process_limit_binds_in_a_root_servers_box(outside: Path) -> None:
    # The kernel never enforces RLIMIT_NPROC on root: 40 processes in a box of at most 16 ran.
    kw = {"repl_command": NOBODY_REPL, "project_dir": outside, "max_repl_procs": 16}
    async with app_with(sandbox="bwrap", sandbox_uid=65534, **kw) as (_, client):
        [result] = await client.verify([Proof("many", proof("children 40 1 0.5"))], timeout=60)
    # The stand-in dies of the failed fork (Lean's `IO.Process.spawn` would throw an IO error).
    assert result.verdict is not Verdict.VALID and "Resource temporarily unavailable" in result.error, result


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
def test_where_bubblewrap_cannot_box_as_nobody_the_box_runs_as_root_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hosts without unprivileged user namespaces (or Ubuntu's AppArmor restriction): a box as root
    # is better than none, and the operator is told.
    real = sandbox.probe
    monkeypatch.setattr(
        sandbox, "probe", lambda box, timeout=20.0: "no user namespace" if box.runs_as else real(box, timeout)
    )
    for mode in ("auto", "bwrap"):
        resolved = sandbox.resolve(mode, tmp_bytes=1 << 20, hide=(), env_allow=(), uid=65534)
        assert resolved.box.enabled and resolved.box.runs_as is None
        assert resolved.warning is not None
        assert "cannot box as uid 65534 here (no user namespace)" in resolved.warning
        assert "root-only files" in resolved.warning


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
async def test_a_repl_the_boxs_uid_cannot_read_is_boxed_as_root_with_a_warning(outside: Path) -> None:
    # A root server with its workspace under /root: boxed as nobody, no REPL would ever start.
    private = outside / "private"
    private.mkdir(mode=0o700)
    async with app_with(sandbox="bwrap", sandbox_uid=65534, project_dir=private) as (app, client):
        [result] = await client.verify([Proof("p", proof())], timeout=60)
        warnings = app.posture.warnings
    assert result.verdict is Verdict.VALID, result.error
    assert any("uid 65534 cannot read " in w and "root-only files" in w for w in warnings), warnings


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
@pytest.mark.skipif(ROOT and NOBODY_REPL is None, reason="no python3 and checkout that uid nobody can run")
async def test_modules_and_raw_code_export_from_a_box_that_is_not_root(outside: Path) -> None:
    (outside / "Foo").mkdir(mode=0o755)
    (outside / "Foo" / "Bar.lean").write_text("theorem foo_bar : True := trivial\n")
    (outside / "Foo" / "Bar.lean").chmod(0o644)
    kw = {"ast_export_command": NOBODY_EXPORT, "ast_export_project_dir": outside, "repl_command": NOBODY_REPL}
    async with app_with(sandbox="bwrap", sandbox_uid=65534, **kw) as (_, client):
        [item] = await client.export_ast(["Foo.Bar"], timeout=60)
        [raw] = await client.export_ast(code="theorem raw_one : True := trivial\n", module="My.Raw", timeout=60)
    assert item.error == "" and "foo_bar" in item.ast, item.error
    assert raw.error == "" and "raw_one" in raw.ast, raw.error
    # What stays: the project's build directory, and raw code's two (empty) mount points.
    assert _dirs(outside) == [
        ".lake",
        ".lake/build",
        ".lake/build/lib",
        ".lake/build/lib/KiminaTmp",
        "Foo",
        "KiminaTmp",
    ]


@pytest.mark.skipif(not ROOT, reason="the box's uid is changed only when the server is root")
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
@pytest.mark.skipif(ROOT and NOBODY_REPL is None, reason="no python3 and checkout that uid nobody can run")
async def test_the_judge_carries_its_pickle_into_a_box_that_is_not_root(outside: Path) -> None:
    # The server creates the pickle in the judge's /tmp, a tmpfs of the box's user namespace where
    # root is not mapped: as root the create failed (EOVERFLOW) and every judged proof was REPL_ERROR.
    honest = Proof("honest", "theorem t : True := by\n  trivial\n", theorem_name="t")
    cheat = Proof(
        "cheat", "axiom c : False\ntheorem t : True := by\n  -- fake: axioms t c\n  trivial\n", theorem_name="t"
    )
    kw = {"repl_command": NOBODY_REPL, "project_dir": outside}
    async with app_with(sandbox="bwrap", sandbox_uid=65534, **kw) as (_, client):
        results = await client.verify([honest, cheat], trust="judge", timeout=60)
    assert [r.verdict for r in results] == [Verdict.VALID, Verdict.UNTRUSTED], [r.error for r in results]


# ---- 6: a secret replaced by rename ----------------------------------------------------------------


@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed (.ci/run installs it)")
async def test_a_secret_rotated_by_rename_stays_masked_in_a_running_box(outside: Path) -> None:
    # Editors, config management, certbot and Kubernetes' secret volumes replace a file by rename;
    # a mount on the old file then covers nothing, and the box that was already running read the
    # new key.
    secrets = outside / "secrets"
    secrets.mkdir(mode=0o755)
    key = secrets / "api-key"
    key.write_text(KEY)
    rotated = "k-" + uuid.uuid4().hex
    async with app_with(sandbox="bwrap", api_key_file=key, max_repls=1, project_dir=outside) as (_, client):
        [before] = await client.verify([Proof("before", proof(f"read {key}"))], timeout=60, diagnostics=True)
        fresh = secrets / "api-key.new"
        fresh.write_text(rotated)
        fresh.chmod(0o644)
        os.rename(fresh, key)
        [after] = await client.verify([Proof("after", proof(f"read {key}", "info 2"))], timeout=60, diagnostics=True)
        assert before.diagnostics and after.diagnostics
        assert after.diagnostics.repl_id == before.diagnostics.repl_id  # the box that was running
        for result in (before, after):
            texts = " ".join(m.text for m in result.messages)
            assert result.verdict is Verdict.VALID, (result.error, texts)
            assert f"read {key}: failed" in texts and KEY not in texts and rotated not in texts, texts


# ---- 7: the decode helper's environment ------------------------------------------------------------


def _decode_helpers(server: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(server).children(recursive=True)
        if any("kimina_grpc.repl.decode" in part for part in p.cmdline())
    ]


# The server's uid without capabilities: the server runs so, and so does the reader (an unboxed
# proof). Root with its capabilities reads any process; without them, as any other uid would.
_NO_CAPS = [SETPRIV or "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def _read(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_NO_CAPS, "cat", path], capture_output=True, text=True, check=False)


@pytest.mark.skipif(SETPRIV is None, reason="needs util-linux setpriv to drop capabilities")
def test_the_decode_helper_carries_no_secret_and_is_not_readable_by_the_servers_uid() -> None:
    # The attack: the box off; an unboxed proof (the server's uid) reads the helper's
    # /proc/PID/environ, which held the API key and the Redis password the server was given.
    secret = "redis-" + uuid.uuid4().hex
    env = {"LEAN_SERVER_API_KEY": KEY, "LEAN_SERVER_CACHE_PASSWORD": secret}
    with serve_process(env, wrapper=_NO_CAPS) as (server, port):

        async def big() -> None:
            async with AsyncKiminaClient(f"127.0.0.1:{port}", KEY, max_attempts=1) as client:
                mb = 4 * INLINE_BYTES / (1 << 20)  # a reply over INLINE_BYTES: parsed by the helper
                [r] = await client.verify([Proof("big", proof(f"infotree-mb {mb}"))], infotree="full", timeout=60)
                assert r.verdict is Verdict.VALID, r.error

        asyncio.run(big())
        [helper] = _decode_helpers(server.pid)
        environ = helper.environ()  # with the test's capabilities
        assert KEY not in str(environ) and secret not in str(environ), environ
        assert environ == {}, environ
        stolen = _read(f"/proc/{helper.pid}/environ")
        assert stolen.returncode != 0 and "Permission denied" in stolen.stderr, (stolen.returncode, stolen.stdout)
    # The reader does read a process of the same uid and capabilities that is not protected.
    with subprocess.Popen([*_NO_CAPS, "sleep", "60"]) as other:
        try:
            eventually_sync(lambda: psutil.Process(other.pid).name() == "sleep", what="setpriv ran sleep")
            assert _read(f"/proc/{other.pid}/environ").returncode == 0
        finally:
            other.kill()


# ---- 10: what ExportAst leaves behind ----------------------------------------------------------------


def _dirs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


async def test_export_ast_removes_the_directories_it_made_and_forgets_module_names(tmp_path: Path) -> None:
    lib = tmp_path / ".lake" / "build" / "lib"
    (lib / "Mine" / "Kept").mkdir(parents=True)  # the project's own build output stays
    (lib / "Mine" / "Kept" / "X.olean").write_bytes(b"")
    before = _dirs(tmp_path)
    deep = [".".join(["Mine", *(f"L{i}N{j}" for j in range(30))]) for i in range(20)]
    kw = {"ast_export_command": fake_ast_export_command(), "ast_export_project_dir": tmp_path, "max_ast_jobs": 4}
    async with app_with(**kw) as (app, client):
        results = await client.export_ast([*deep, "Mine.Kept.Y"], one=True, timeout=60)
        assert len(results) == 21
        assert _dirs(tmp_path) == before
        assert (lib / "Mine" / "Kept" / "X.olean").exists()
        assert app.servicer.exporter is not None and app.servicer.exporter.busy_names == 0


# ---- 8: load before authentication, descriptors ------------------------------------------------------


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmHWM")


def test_unauthenticated_calls_are_refused_before_their_message_is_read() -> None:
    # 16 unauthenticated 60 MiB Verify calls took the server from 67 to 1,226 MiB: gRPC read each
    # message whole before the key was checked.
    calls, size = 8, 60 << 20
    with serve_process({"LEAN_SERVER_API_KEY": KEY}) as (server, port):
        before = _peak_rss(server.pid)

        async def flood() -> list[grpc.StatusCode]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.VerifierServiceStub(channel)
                request = pb.VerifyRequest(proofs=[pb.Proof(id="big", code="x" * size)])
                codes = []
                for outcome in await asyncio.gather(
                    *(stub.Verify(request, timeout=120) for _ in range(calls)), return_exceptions=True
                ):
                    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
                    codes.append(outcome.code())
                return codes

        assert asyncio.run(flood()) == [grpc.StatusCode.UNAUTHENTICATED] * calls
        grown = _peak_rss(server.pid) - before
    assert grown < 2 * size, f"the server's peak grew by {grown >> 20} MiB"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_the_server_raises_its_open_files_limit_to_the_hard_one() -> None:
    with serve_process(wrapper=["prlimit", "--nofile=512:4096", "--"]) as (server, _):
        assert psutil.Process(server.pid).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_idle_metrics_connections_cannot_take_the_servers_descriptors() -> None:
    # 600 idle connections to the metrics port took every descriptor: a new REPL failed with "Too
    # many open files". Here the server's hard limit is 256, so raising the soft one does not help.
    metrics = free_port()
    env = {"LEAN_SERVER_METRICS_PORT": str(metrics), "LEAN_SERVER_MAX_REPLS": "2"}
    idle: list[socket.socket] = []
    with serve_process(env, wrapper=["prlimit", "--nofile=256:256", "--"]) as (_, port):
        try:
            for _ in range(400):
                idle.append(socket.create_connection(("127.0.0.1", metrics), timeout=10))
            # Accepted in order: once this scrape is answered, every idle one was accepted before it.
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=30) as page:
                assert page.status == 200 and b"kimina_" in page.read()
            with KiminaClient(f"127.0.0.1:{port}", max_attempts=1) as client:
                results = client.verify([Proof(str(i), proof()) for i in range(3)], reuse=False, timeout=60)
            assert [r.verdict for r in results] == [Verdict.VALID] * 3, [r.error for r in results]
        finally:
            for sock in idle:
                sock.close()


async def test_the_health_port_reads_no_request_bigger_than_a_service_name() -> None:
    async with app_with(api_key=KEY, health_port=0) as (app, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert (await stub.Check(health_pb2.HealthCheckRequest(service="liveness"))).status == 1  # SERVING
            with pytest.raises(grpc.aio.AioRpcError) as big:
                await stub.Check(health_pb2.HealthCheckRequest(service="x" * (1 << 20)))
    assert big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
