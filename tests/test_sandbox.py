"""The box: the stand-in REPL attacks the way `#eval` would, with bubblewrap on (every attack fails)
and off (secrets still out of its environment); processes die with the server; adopted children
are reaped; the posture shows in GetServerInfo and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus_client import generate_latest

from kimina_grpc.client import InvalidArgument, KiminaClient, Result, Verdict
from kimina_grpc.repl import Repl, ReplCrashed, ReplSpec, boxfs, sandbox, seccomp
from kimina_grpc.repl.environment import allowed_env
from kimina_grpc.repl.masks import default_hide
from kimina_grpc.repl.sandbox import OFF, Box, Limits, SandboxUnavailable, probe
from kimina_grpc.service.server import create_app
from kimina_grpc.testing import fake_ast_export_command, fake_repl_command, serve_process
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually, eventually_sync
from .helpers.processes import FAKE, children, stand_ins
from .helpers.sandbox import KEY, app_with, proof
from .helpers.server import settings

BWRAP = shutil.which("bwrap")
BOX = Box(bwrap=BWRAP)


def _bwrap_reason() -> str | None:
    if BWRAP is None:
        return "bubblewrap is not installed (.ci/run installs it)"
    return probe(BOX)


_NO_BWRAP = _bwrap_reason()
needs_bwrap = pytest.mark.skipif(_NO_BWRAP is not None, reason=f"bwrap cannot run here: {_NO_BWRAP}")


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside /tmp (the box replaces /tmp with its own, so a file there proves nothing)."""
    path = Path(tempfile.mkdtemp(prefix="kimina-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def said(result: Result, verb: str) -> str:
    """The stand-in's report of one attack (an info message, as `#eval` output is)."""
    lines = [m.text for m in result.messages if m.text.startswith((verb + " ", verb + ":"))]
    assert len(lines) == 1, (verb, [m.text for m in result.messages], result.error)
    return lines[0]


def marked(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


# ---- the pieces --------------------------------------------------------------------------------------


def test_the_environment_is_an_allow_list_and_never_the_servers_settings() -> None:
    source = {
        "PATH": "/usr/bin",
        "LC_ALL": "C",
        "ELAN_HOME": "/e",
        "LEAN_PATH": "/l",
        "LEAN_SERVER_API_KEY": KEY,
        "AWS_SECRET_ACCESS_KEY": "x",
        "DATABASE_URL": "postgres://u:p@h/db",
    }
    env = allowed_env(source, ("PATH", "LC_*", "ELAN_HOME", "LEAN_PATH", "LEAN_SERVER_API_KEY", "LEAN_SERVER_*"))
    assert env == {"PATH": "/usr/bin", "LC_ALL": "C", "ELAN_HOME": "/e", "LEAN_PATH": "/l"}
    boxed = Box().environ({"LEAN_SERVER_API_KEY": KEY, "X": "1"}, source={"PATH": "/b"})
    assert {k: v for k, v in boxed.items() if not k.startswith("GIT_CONFIG_")} == {"PATH": "/b", "X": "1"}


def test_unboxed_command_lines_die_with_the_server_also_through_lake() -> None:
    argv = OFF.argv(["lake", "env", "/ws/repl"], limits=Limits(1 << 30, 1 << 20, 100))
    setpriv = [shutil.which("setpriv"), "--pdeathsig", "KILL", "--"]
    assert argv[:4] == setpriv
    # The parent must still be the server once the signal is set (it may die between fork and prctl).
    assert argv[4:6] == ["/bin/sh", "-c"] and argv[7] == str(os.getpid())
    rest = argv[8:]
    assert rest[0] == shutil.which("prlimit")
    assert {"--core=0", f"--as={1 << 30}:{1 << 30}", f"--fsize={1 << 20}:{1 << 20}", "--nproc=100:100"} <= set(rest)
    # The command is made a subreaper (what a proof orphans stays in its tree), then lake runs the
    # REPL as its child; a parent-death signal is not inherited, so the REPL gets its own.
    command = rest[rest.index("--") + 1 :]
    assert command[:3] == [sys.executable, "-I", "-S"] and "prctl(36, 1" in command[4]
    assert command[5:] == ["lake", "env", *setpriv, "/ws/repl"]


def test_a_process_whose_server_died_while_it_started_gives_up() -> None:
    check = OFF.argv(["true"])[4:8]
    alive = subprocess.run([*check[:3], str(os.getpid()), "echo", "ran"], capture_output=True, text=True, check=False)
    assert alive.returncode == 0 and alive.stdout == "ran\n"
    dead = subprocess.run([*check[:3], "999999999", "echo", "ran"], capture_output=True, text=True, check=False)
    assert dead.returncode == 137 and dead.stdout == ""


def test_secrets_are_masked_in_the_box(outside: Path) -> None:
    key = outside / "api-key"
    key.write_text(KEY)
    (outside / "dir").mkdir()
    argv = Box(bwrap="/usr/bin/bwrap", hide=default_hide([key, outside / "dir"])).argv(["true"])
    # A file is masked with its directory (a mask on the file itself is lost when it is replaced by
    # rename), which holds the other secret too.
    assert argv[argv.index(str(outside)) - 1] == "--tmpfs" and str(outside / "dir") not in argv
    # Beside what the box needs (here its cwd), only the file.
    argv = Box(bwrap="/usr/bin/bwrap", hide=default_hide([key])).argv(["true"], cwd=str(outside))
    assert ["--ro-bind", "/dev/null", str(key)] == argv[argv.index(str(key)) - 2 : argv.index(str(key)) + 1]
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--new-session", "--die-with-parent"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"


async def test_with_the_box_off_secrets_are_not_in_the_repls_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEAN_SERVER_API_KEY_OF_ANOTHER_SERVER", "s3")
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    async with app_with(sandbox="off", api_key=KEY) as (_, client):
        info = await client.server_info()
        assert info.sandbox == "off" and any("sandbox off" in w for w in info.security_warnings)
        [result] = await client.verify(proof("environ self"))
    text = said(result, "environ")
    assert ": ok " in text and "PATH=" in text
    assert "LEAN_SERVER" not in text and KEY not in text and "hunter2" not in text


async def test_auto_without_bubblewrap_serves_with_a_loud_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    app = create_app(settings(sandbox="auto", auth="off"))
    assert app.posture.sandbox == "off"
    assert any(w.startswith("NO SANDBOX: bubblewrap (bwrap) is not installed") for w in app.posture.warnings)
    assert any("authentication off" in w for w in app.posture.warnings)
    metrics = generate_latest(app.metrics.registry).decode()
    assert "kimina_sandbox_enabled 0.0" in metrics and "kimina_auth_enabled 0.0" in metrics
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed"):
        create_app(settings(sandbox="bwrap", auth="off"))


# ---- attacks with the box on -----------------------------------------------------------------------


@needs_bwrap
async def test_every_attack_fails_in_the_box(outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    workspace = outside / "workspace"
    workspace.mkdir()
    olean = workspace / "Mathlib.olean"
    olean.write_text("the real thing")
    key_file = outside / "api-key"
    key_file.write_text(KEY + "\n")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    marker = f"kimina-marker-{uuid.uuid4().hex}"
    try:
        async with app_with(
            sandbox="bwrap", api_key_file=key_file, sandbox_tmp_size="64M", max_repls=2, project_dir=workspace
        ) as (app, client):
            info = await client.server_info()
            warnings = [w for w in info.security_warnings if "SANDBOX_UID=0" not in w]  # see helpers/server.py
            assert info.sandbox == "bwrap" and info.auth_required and warnings == []
            assert "kimina_sandbox_enabled 1.0" in generate_latest(app.metrics.registry).decode()
            # Another REPL (another header), and its host pid.
            [other] = await client.verify(proof("write /tmp/b-private b-data", header="import B"))
            assert ": ok" in said(other, "write")
            before = {p.pid for p in children()}
            [attacked] = await client.verify(
                proof(
                    f"write {olean} pwned",
                    "read /proc/self/status",
                    "write /tmp/a-private a-data",
                    "write /tmp/b-private pwned",
                    f"read {key_file}",
                    "environ self",
                    f"connect 127.0.0.1 {port}",
                    f"signal {os.getpid()}",
                    "fill-tmp 100",
                    header="import A",
                )
            )
            b_repls = [p for p in stand_ins() if p.pid in before]
            assert b_repls and [p for p in stand_ins() if p.pid not in before]
            [signalled] = await client.verify(proof(f"signal {b_repls[0].pid}", "environ parent", header="import A"))
            [snoop] = await client.verify(proof("read /tmp/a-private", "read /tmp/b-private", header="import B"))

            assert "failed: OSError: [Errno 30] Read-only file system" in said(attacked, "write " + str(olean))
            assert olean.read_text() == "the real thing"
            status = said(attacked, "read /proc/self/status")
            assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
            assert KEY not in said(attacked, f"read {key_file}")  # masked: the box sees an empty file
            for text in (said(attacked, "environ"), said(signalled, "environ")):
                assert "PATH=" in text and "LEAN_SERVER" not in text and KEY not in text and "hunter2" not in text
            assert "failed" in said(attacked, "connect")
            with pytest.raises(BlockingIOError):
                listener.accept()
            assert "failed: ProcessLookupError" in said(attacked, "signal")
            assert "failed: ProcessLookupError" in said(signalled, "signal")
            assert all(p.is_running() for p in b_repls)
            assert "No space left on device" in said(attacked, "fill-tmp")
            # Each box has its own /tmp: A's file is not in B's, and B's file is as B wrote it.
            assert "failed: FileNotFoundError" in said(snoop, "read /tmp/a-private")
            assert said(snoop, "read /tmp/b-private").endswith(": ok b-data")
            # A process the proof leaves behind could write replies or read later proofs: the REPL
            # is not trusted with it, the proof's reply neither; nothing it started survives.
            [spawner] = await client.verify(proof(f"spawn 120 {marker}", header="import A"))
            assert spawner.verdict is Verdict.REPL_ERROR and "started a process" in spawner.error
            await eventually(lambda: marked(marker) == [], what="what the proof started killed")
            [after] = await client.verify(proof(header="import B"))
            assert after.verdict is Verdict.VALID
    finally:
        listener.close()
        for p in marked(marker):
            p.kill()


@needs_bwrap
async def test_killing_a_boxed_repl_kills_the_whole_box() -> None:
    spec = ReplSpec(argv=(sys.executable, "-m", "kimina_grpc.testing.fake_repl"), box=BOX)
    repl = await Repl.start(spec, "boxed")
    raw = await repl.request(
        json.dumps({"cmd": "theorem t : True := by\n  -- fake: grandchild\n  trivial"}).encode() + b"\n\n"
    )
    assert b"grandchild : ok pid" in raw
    await repl.settle()
    tree = [psutil.Process(pid) for pid in repl.tree()]
    assert len(tree) >= 4  # bwrap, the box's init, the REPL, its child
    await repl.kill()
    assert [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


@needs_bwrap
async def test_cpu_peak_memory_and_the_memory_cap_work_inside_the_box() -> None:
    spec = ReplSpec(argv=(sys.executable, "-m", FAKE), box=BOX, max_memory_bytes=400 << 20)
    repl = await Repl.start(spec, "boxed")
    try:
        await repl.run(_cmd(""))
        await repl.settle()
        _, usage = await repl.run(_cmd("-- fake: cpu 0.3\n-- fake: spike 200", 0))
        assert usage.cpu_seconds >= 0.25 and usage.peak_bytes >= 200 << 20
        with pytest.raises(ReplCrashed, match="out of memory"):
            await repl.run(_cmd("-- fake: alloc 600", 0))
    finally:
        await repl.kill()


def _cmd(cmd: str, env: int | None = None) -> bytes:
    return json.dumps({"cmd": cmd} if env is None else {"cmd": cmd, "env": env}).encode() + b"\n\n"


async def _attacked(repl: Repl, *directives: str) -> dict[str, str]:
    """Run one command of attack directives on a started REPL; each attack's report by its verb and
    argument."""
    cmd = "theorem t : True := by\n" + "".join(f"  -- fake: {d}\n" for d in directives) + "  trivial"
    raw = await repl.request(json.dumps({"cmd": cmd}).encode() + b"\n\n")
    reports = [m["data"] for m in json.loads(raw).get("messages", [])]
    prefixes = {d: "{} {}:".format(*d.partition(" ")[::2]) for d in directives}
    return {d: next(r for r in reports if r.startswith(prefix)) for d, prefix in prefixes.items()}


async def _in_a_box(box: Box, *directives: str) -> dict[str, str]:
    """`_attacked` on a stand-in REPL started in `box` for it, killed after."""
    repl = await Repl.start(ReplSpec(argv=(sys.executable, "-m", FAKE), box=box), "boxed")
    try:
        return await _attacked(repl, *directives)
    finally:
        await repl.kill()


@needs_bwrap
async def test_the_box_refuses_ptrace_keyrings_new_namespaces_io_uring_and_unix_sockets(outside: Path) -> None:
    """What the review did from inside a box: attach to the box's init (and so clear its parent-death
    signal: the box outlives the server), write the host's keyring, make namespaces, reach a path
    socket of the host. Threads, fork and exec still work (Lean and `lake env` need them)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(outside / "sock"))
    listener.listen()
    listener.setblocking(False)
    key = f"kimina-attack-{uuid.uuid4().hex}"
    try:
        said = await _in_a_box(
            BOX,
            "ptrace 1",
            "proc-mem 1",
            f"keyctl {key}",
            "unshare",
            "io-uring",
            f"unix {outside / 'sock'}",
            "grandchild",
        )
    finally:
        listener.close()
    assert said["ptrace 1"].endswith("failed: PermissionError: [Errno 1] Operation not permitted")
    assert "failed: OSError: [Errno 30] Read-only file system" in said["proc-mem 1"]  # /proc is read-only
    assert "Operation not permitted" in said[f"keyctl {key}"] and key not in Path("/proc/keys").read_text()
    for attack in ("unshare", "io-uring", f"unix {outside / 'sock'}"):
        assert "failed: PermissionError: [Errno 1] Operation not permitted" in said[attack], said[attack]
    assert ": ok pid" in said["grandchild"]  # fork and exec
    threads = "import threading; t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()"
    done = subprocess.run(
        BOX.argv([sys.executable, "-c", threads], cwd="/"), capture_output=True, text=True, check=False
    )
    assert done.stdout == "thread\n", done.stderr
    status = subprocess.run(BOX.argv(["cat", "/proc/self/status"], cwd="/"), capture_output=True, text=True, check=True)
    assert "Seccomp:\t2" in status.stdout and "NoNewPrivs:\t1" in status.stdout


@needs_bwrap
async def test_every_fresh_mount_is_bounded_or_read_only(outside: Path) -> None:
    """Only /tmp was bounded: /dev/shm, /dev, /run and the masks took 1.5 GB of the host's memory."""
    (outside / "secrets").mkdir()
    box = Box(bwrap=BWRAP, hide=(str(outside / "secrets"),), tmp_bytes=32 << 20)
    said = await _in_a_box(
        box,
        "fill /dev/shm/x 100",
        "fill /dev/x 1",
        "fill /run/x 1",
        f"fill {outside / 'secrets' / 'x'} 1",
        "fill /tmp/x 100",
    )
    assert f"No space left on device after {sandbox.SHM_BYTES >> 20} MiB" in said["fill /dev/shm/x 100"]
    assert "No space left on device after 32 MiB" in said["fill /tmp/x 100"]
    for where in ("/dev/x", "/run/x", str(outside / "secrets" / "x")):
        assert "Read-only file system" in said[f"fill {where} 1"], said[f"fill {where} 1"]


@needs_bwrap
def test_secrets_are_masked_under_a_directory_the_box_binds_back() -> None:
    """A key file beside the workspace under /tmp: the box binds the workspace's top directory back,
    and the mask must come after that bind (the review's box read the key)."""
    top = Path(tempfile.mkdtemp(prefix="kimina-test-", dir="/tmp"))
    try:
        (top / "ws").mkdir()
        key = top / "api-key"
        key.write_text(KEY)
        box = Box(bwrap=BWRAP, hide=default_hide([key]))
        done = subprocess.run(
            box.argv(["cat", str(key)], cwd=str(top / "ws")), capture_output=True, text=True, check=False
        )
        assert KEY not in done.stdout and "Permission denied" in done.stderr  # /dev/null on a nodev mount
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_seccomp_program_is_native_only_and_covers_x86_64_and_aarch64() -> None:
    for arch in (seccomp.X86_64, seccomp.AARCH64):
        code = seccomp.program(arch)
        assert len(code) % 8 == 0 and code[:8] == bytes.fromhex("2000000004000000")  # load the arch first
        assert {"ptrace", "keyctl", "unshare", "setns", "mount", "chroot", "bpf", "io_uring_setup"} <= set(arch.denied)
    assert len(set(seccomp.X86_64.denied.values())) == len(seccomp.X86_64.denied)
    assert len(set(seccomp.AARCH64.denied.values())) == len(seccomp.AARCH64.denied)


@needs_bwrap
def test_auto_probes_the_box_with_its_filter_and_falls_back_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "filter.bpf"
    broken.write_bytes(b"not a BPF program")  # bwrap refuses it, as a kernel without seccomp would
    monkeypatch.setattr(seccomp, "program_file", lambda: str(broken))
    resolved = sandbox.resolve("auto", tmp_bytes=1 << 20, hide=(), env_allow=())
    assert resolved.box.bwrap is None and resolved.warning and resolved.warning.startswith("NO SANDBOX: bwrap failed")
    with pytest.raises(SandboxUnavailable, match="seccomp"):
        sandbox.resolve("bwrap", tmp_bytes=1 << 20, hide=(), env_allow=())


_FORKS = """
import os, sys, time
n = 0
try:
    while n < 200:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n)
"""


@needs_bwrap
def test_the_process_count_is_per_box_not_per_user_id() -> None:
    """RLIMIT_NPROC counts all of a user id's processes; set inside the box's user namespace, it
    counts the box's own (a fork bomb in one box does not starve the server's other REPLs)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or python is None:
        pytest.skip("needs root (to run as another user) and /usr/bin/python3")
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    others = subprocess.Popen(
        [*nobody, python, "-c", _FORKS.replace("200", "60")], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert others.stdout is not None and others.stdout.readline().strip() == "60"  # the uid's other processes
        argv = BOX.argv([python, "-c", _FORKS], cwd="/", limits=Limits(processes=40))
        done = subprocess.run([*nobody, *argv], capture_output=True, text=True, check=False)
    finally:
        os.killpg(others.pid, signal.SIGKILL)
        others.wait()
    assert done.returncode == 0, done.stderr
    assert 30 <= int(done.stdout) < 40  # the box's init and its first process count too


# ---- ExportAst in the box ------------------------------------------------------------------------------

# A stand-in exporter whose code attacks after the tool wrote its output, the way `#eval` in raw code
# could: the directives are the stand-in REPL's attacks, OUT is the output file's path.
_EVIL_EXPORT = """
import sys
from pathlib import Path
from kimina_grpc.testing import fake_ast_export
from kimina_grpc.testing.fake_attacks import ATTACKS, attack
from kimina_grpc.testing.fake_syntax import DIRECTIVE

module = sys.argv[-1]
out = ".lake/build/lib/" + module.replace(".", "/") + ".out.json"
source = Path(*module.split(".")).with_suffix(".lean")
code = fake_ast_export.main(sys.argv[1:])
for line in source.read_text().splitlines():
    d = DIRECTIVE.match(line)
    if d and d.group(1) in ATTACKS:
        print(attack(d.group(1), d.group(2).replace("OUT", out)), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def evil_export(outside: Path) -> str:
    script = outside / "evil_export.py"
    script.write_text(_EVIL_EXPORT)
    return f"{sys.executable} {script}"


@pytest.mark.parametrize("mode", ["off", pytest.param("bwrap", marks=needs_bwrap)])
def test_an_export_cannot_make_the_server_read_a_file_of_its_choosing(
    mode: str, outside: Path, evil_export: str
) -> None:
    """Raw code replaces the exporter's output with a symlink: to the server's own environment (the
    server followed it and answered with its API key), to the key file, a FIFO (the server hung),
    /dev/zero (it ran out of memory)."""
    (outside / "ast").mkdir()
    key_file = outside / "api-key"
    key_file.write_text(KEY)
    fifo = f"/tmp/kimina-test-fifo-{uuid.uuid4().hex}"
    env = {
        "LEAN_SERVER_SANDBOX": mode,
        "LEAN_SERVER_SANDBOX_UID": "0",  # this interpreter may be root's alone (see helpers/server.py)
        "LEAN_SERVER_API_KEY_FILE": str(key_file),
        "LEAN_SERVER_AST_EXPORT_COMMAND": evil_export,
        "LEAN_SERVER_AST_EXPORT_PROJECT_DIR": str(outside / "ast"),
        "DATABASE_PASSWORD": "hunter2",
        "LEAN_SERVER_REPL_ENV_ALLOW": "",
    }
    targets = ["/proc/self/environ", str(key_file), "/dev/zero", fifo]
    try:
        with serve_process(env) as (_, port), KiminaClient(f"127.0.0.1:{port}", KEY) as client:
            for target in targets:
                code = f"-- fake: fifo {fifo}\n-- fake: symlink OUT {target}\ntheorem t : True := trivial\n"
                [item] = client.export_ast(code=code, module="My.Code", timeout=10)
                assert "hunter2" not in item.ast and "LEAN_SERVER" not in item.ast, target
                if mode == "bwrap":  # unboxed, the code can read the key file itself (same uid)
                    assert KEY not in item.ast
                assert "timeout" not in item.error
            assert client.verify(proof())[0].verdict is Verdict.VALID
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)


@needs_bwrap
async def test_raw_code_cannot_fill_the_host_disk_through_its_output_directory(outside: Path, evil_export: str) -> None:
    project = outside / "ast"
    project.mkdir()
    code = "-- fake: fill .lake/build/lib/KiminaTmp/junk 100\n-- fake: fail stop\n"
    async with app_with(
        sandbox="bwrap",
        api_key=KEY,
        sandbox_tmp_size="32M",
        ast_export_command=evil_export,
        ast_export_project_dir=project,
    ) as (_, client):
        [item] = await client.export_ast(code=code, module="My.Code")
    assert "No space left on device after 32 MiB" in item.error, item.error
    assert [p for p in project.rglob("*") if p.is_file()] == []


@needs_bwrap
async def test_a_named_export_may_write_its_output_file_only(outside: Path) -> None:
    project = outside / "ast"
    lib = project / ".lake" / "build" / "lib" / "Foo"
    lib.mkdir(parents=True)
    (lib / "Other.olean").write_text("the real thing")
    (project / "Foo").mkdir()
    (project / "Foo" / "Bar.lean").write_text(f"-- fake: write {lib / 'Other.olean'}\ntheorem a : True := trivial\n")
    async with app_with(
        sandbox="bwrap", api_key=KEY, ast_export_command=fake_ast_export_command(), ast_export_project_dir=project
    ) as (_, client):
        [named] = await client.export_ast(["Foo.Bar"])
    assert named.error == "" and json.loads(named.ast)["commands"]
    assert (lib / "Other.olean").read_text() == "the real thing"
    assert not (lib / "Bar.out.json").exists()


@needs_bwrap
async def test_exports_run_in_the_box_and_raw_code_never_touches_the_project(outside: Path) -> None:
    project = outside / "ast"
    (project / "Foo").mkdir(parents=True)
    (project / "Foo" / "Bar.lean").write_text(f"-- fake: write {project}/Foo/Bar.lean\ntheorem a : True := trivial\n")
    victim = project / "victim.txt"
    code = f"-- fake: write {victim}\n-- fake: sleep 0.5\ntheorem t : 1 = 1 := rfl\n"
    async with app_with(
        sandbox="bwrap", api_key=KEY, ast_export_command=fake_ast_export_command(), ast_export_project_dir=project
    ) as (_, client):
        export = asyncio.ensure_future(client.export_ast(code=code, module="My.Proof"))
        # Kept: a look mid-export (the stand-in sleeps 0.5 s after its write); what happens inside the
        # box shows nowhere outside it, which is the point.
        await asyncio.sleep(0.3)
        written = [p for p in project.rglob("*") if p.is_file() and p.suffix in (".lean", ".json")]
        assert written == [project / "Foo" / "Bar.lean"]  # the code is only inside the box
        [item] = await export
        [named] = await client.export_ast(["Foo.Bar"])
    assert item.error == "" and json.loads(item.ast)["commands"] and item.module == "My.Proof"
    assert named.error == "" and json.loads(named.ast)["commands"]
    assert not victim.exists()
    assert (project / "Foo" / "Bar.lean").read_text().startswith("-- fake: write")  # not "pwned"
    assert [p for p in project.rglob("*") if p.is_file() and p.suffix == ".json"] == []


async def test_module_names_are_lean_identifiers_without_guillemets(tmp_path: Path) -> None:
    async with app_with(
        sandbox="off", api_key=KEY, ast_export_command=fake_ast_export_command(), ast_export_project_dir=tmp_path
    ) as (_, client):
        for modules, module in ((["«..».«..».etc.passwd"], ""), (["A.«b/../../c»"], ""), ([], "«../x»")):
            with pytest.raises(InvalidArgument):
                await client.export_ast(modules, code="x" if module else None, module=module)


# ---- processes die with the server -------------------------------------------------------------------


@pytest.fixture
def fake_lake(outside: Path) -> Path:
    """A `lake` that does what `lake env CMD` does: runs CMD as its child and waits for it."""
    bin_dir = outside / "bin"
    bin_dir.mkdir()
    lake = bin_dir / "lake"
    lake.write_text('#!/bin/sh\n[ "$1" = env ] || exit 2\nshift\n"$@"\nexit $?\n')
    lake.chmod(lake.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


@pytest.mark.parametrize("mode", ["off", pytest.param("bwrap", marks=needs_bwrap)])
def test_kill_9_of_the_server_leaves_no_repl_and_a_restart_binds_again(mode: str, fake_lake: Path) -> None:
    env = {
        "LEAN_SERVER_SANDBOX": mode,
        "LEAN_SERVER_SANDBOX_UID": "0",  # this interpreter may be root's alone (see helpers/server.py)
        "LEAN_SERVER_MAX_REPLS": "2",
        "LEAN_SERVER_INIT_REPLS": '{"": 1}',
        "LEAN_SERVER_REPL_COMMAND": f"lake env {fake_repl_command()}",
        "PATH": f"{fake_lake}:{os.environ['PATH']}",
    }
    with serve_process(env) as (server, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # A proof runs (hangs) in the server while it dies.
        hung = pb_grpc.VerifierServiceStub(channel).Verify.future(
            pb.VerifyRequest(proofs=[pb.Proof(id="h", code=proof("hang", header="import A"))])
        )

        def both_repls() -> list[psutil.Process]:  # the warm REPL and the hung one
            tree = _alive(_descendants(server.pid))
            return tree if len([p for p in tree if p.name().startswith("python")]) >= 2 else []

        tree = eventually_sync(both_repls, what="the warm REPL and the hung one")
        server.kill()
        server.wait()
        eventually_sync(lambda: _alive(tree) == [], what="every process of the server's gone with it")
        with pytest.raises(grpc.RpcError):
            hung.result(timeout=5)
    # Nothing left holds the port (so_reuseport is off: a leftover would make the bind fail).
    with serve_process({**env, "LEAN_SERVER_PORT": str(port)}) as (_, again):
        with KiminaClient(f"127.0.0.1:{again}") as client:
            assert client.verify(proof())[0].verdict is Verdict.VALID


def test_adopted_children_are_reaped_when_the_server_is_pid_1() -> None:
    """A container whose PID 1 is the server: what `lake env` started is reparented to it on a kill."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs util-linux's unshare and root for a PID namespace")
    env = {"LEAN_SERVER_MAX_REPLS": "1"}
    wrapper = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc"]
    with serve_process(env, wrapper) as (outer, port), KiminaClient(f"127.0.0.1:{port}") as client:
        [server] = psutil.Process(outer.pid).children()
        for _ in range(3):
            [r] = client.verify(proof("grandchild", "hang"), timeout=0.3)
            assert r.verdict is Verdict.TIMEOUT
        assert client.verify(proof())[0].verdict is Verdict.VALID
        eventually_sync(
            lambda: not [p for p in server.children() if p.status() == psutil.STATUS_ZOMBIE], what="no zombie left"
        )


@needs_bwrap
@pytest.mark.parametrize("swap_to", ["host-file", "fifo", "/dev/zero"])
async def test_a_daemon_in_the_box_cannot_make_the_server_read_what_it_chooses(swap_to: str, outside: Path) -> None:
    """The judge carries a pickle out of the proof's box. A daemon the proof left in its box turns
    every pickle into a symlink to a host file, a FIFO or /dev/zero while the server reads: the read
    fails with a clear error, never returns the host file, and the event loop keeps running."""
    host_file = outside / "host-secret"
    host_file.write_text(KEY)
    target = {"host-file": str(host_file)}.get(swap_to, swap_to)
    repl = await Repl.start(ReplSpec(argv=(sys.executable, "-m", FAKE), box=BOX), "boxed")
    try:
        said = await _attacked(repl, "write /tmp/plain data", f"swap /tmp/kimina-judge-*.olean {target}")
        assert ": ok pid" in said[f"swap /tmp/kimina-judge-*.olean {target}"]
        assert await boxfs.read_from_box(repl.pid, "/tmp/plain") == b"data"
        pickle = "/tmp/kimina-judge-1.olean"
        await _attacked(repl, f"write {pickle} the-pickle")
        for _ in range(500):  # until the daemon has swapped it (a FIFO or /dev/zero would hang a plain read)
            try:
                data = await asyncio.wait_for(boxfs.read_from_box(repl.pid, pickle, max_bytes=1 << 20), 5)
            except boxfs.BoxFileError as exc:
                error = str(exc)
                if "No such file or directory" in error:  # caught between the daemon's unlink and its symlink
                    continue
                break
            assert data == b"the-pickle"
            await asyncio.sleep(0.002)  # the next try at the race with the daemon: a pace, not a wait
        else:
            pytest.fail("the daemon never swapped the pickle")
        assert "Too many levels of symbolic links" in error or "is not a regular file" in error, error
        with pytest.raises(boxfs.BoxFileError, match="not a plain absolute path"):
            await boxfs.read_from_box(repl.pid, "/tmp/../etc/passwd")
        # The writing side: a new file only, never through what is there.
        await boxfs.write_into_box(repl.pid, "/tmp/carried", b"pickle")
        assert await boxfs.read_from_box(repl.pid, "/tmp/carried") == b"pickle"
        with pytest.raises(boxfs.BoxFileError, match="File exists"):
            await boxfs.write_into_box(repl.pid, "/tmp/carried", b"again")
        await boxfs.remove_from_box(repl.pid, "/tmp/carried")
        await boxfs.remove_from_box(repl.pid, "/tmp/carried")  # already gone: nothing to do
        assert host_file.read_text() == KEY
    finally:
        await repl.kill()
    with pytest.raises(boxfs.BoxFileError, match="gone"):
        await boxfs.read_from_box(repl.pid, "/tmp/plain")


@needs_bwrap
async def test_the_judge_carries_the_pickle_between_boxes() -> None:
    """Each box has a private /tmp: the proof's pickle is written in its box, and the judge's REPL,
    in another box, must still read it (and nothing is left in the proof's box)."""
    from kimina_grpc.repl import ReplSpec
    from kimina_grpc.supervisor import PoolSettings, Supervisor

    from .helpers.pool import ARGV
    from .helpers.trust import HONEST, JUDGE, check

    sup = Supervisor(PoolSettings(spec=ReplSpec(argv=ARGV, box=BOX), max_repls=1, import_cost_hint=0.1))
    await sup.start()
    try:
        hijacked = (
            "-- fake: hijack-print-axioms\naxiom cheat : False\n"
            "theorem t : 1 = 2 := cheat.elim\n-- fake: axioms t cheat"
        )
        out = await check(sup, hijacked, JUDGE)
        assert out.verdict is Verdict.UNTRUSTED and "cheat in the judge's clean environment" in out.reason
        out = await check(sup, HONEST, JUDGE)
        assert out.verdict is Verdict.VALID, out.reason
        pool_repl = next(iter(sup.workers())).repl
        assert pool_repl is not None
        from kimina_grpc.repl.boxfs import _init_of

        assert not list(Path(f"/proc/{_init_of(pool_repl.pid)}/root/tmp").glob("kimina-judge-*"))
    finally:
        await sup.close()
    assert children() == []
