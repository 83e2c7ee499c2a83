"""Deployment: the Kubernetes manifests, the Dockerfile, and several replicas behind one client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydantic import ValidationError

from kimina_grpc.client import AsyncKiminaClient, Proof, Verdict
from kimina_grpc.repl.sandbox import SandboxUnavailable
from kimina_grpc.service.server import LIVENESS, SERVICE_NAME, create_app
from kimina_grpc.testing import free_port

from .helpers import eventually, eventually_sync
from .helpers.paths import ROOT
from .helpers.server import settings

K8S = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, Any]:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in docs}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_manifests_parse_and_probes_are_native_grpc() -> None:
    kinds = manifests()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = container["ports"][0]["containerPort"]
    assert port == 50051
    env = env_of(container)
    # The kubelet's gRPC probes speak no TLS: they use the plaintext health-only port.
    health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert int(env["LEAN_SERVER_HEALTH_PORT"]) == health != port
    for probe, service in (
        ("startupProbe", SERVICE_NAME),
        ("readinessProbe", SERVICE_NAME),
        ("livenessProbe", LIVENESS),
    ):
        grpc = container[probe]["grpc"]
        assert isinstance(grpc["port"], int) and grpc["port"] == health
        assert grpc["service"] == service
    assert pod["terminationGracePeriodSeconds"] >= float(env["LEAN_SERVER_DRAIN_SECONDS"]) + float(
        env["LEAN_SERVER_GRACE_SECONDS"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert float(env["LEAN_SERVER_MAX_CONNECTION_AGE"]) > 0
    metrics = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert int(env["LEAN_SERVER_METRICS_PORT"]) == metrics
    assert kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    assert container["resources"]["requests"]["memory"]


def test_service_is_headless_and_selects_the_pods() -> None:
    kinds = manifests()
    service = kinds["Service"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == service["selector"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]


def test_pod_security_is_restricted_and_the_secret_is_required() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = env_of(container)
    assert "LEAN_SERVER_API_KEY" not in env and "LEAN_SERVER_AUTH" not in env
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_volume = next(name for name, path in mounts.items() if env["LEAN_SERVER_API_KEY_FILE"].startswith(path + "/"))
    assert volumes[key_volume]["secret"].get("optional", False) is False
    # A read-only root filesystem: what must be writable is an emptyDir.
    assert "emptyDir" in volumes[next(n for n, p in mounts.items() if p == "/tmp")]
    assert env["LEAN_SERVER_SANDBOX"] in ("auto", "bwrap")


def test_network_policy_allows_grpc_and_metrics_in_and_nothing_out() -> None:
    kinds = manifests()
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    [rule] = policy["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"grpc", "metrics"}
    names = {p["name"] for p in kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {"grpc", "metrics"} <= names


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage
    assert re.search(r"^ARG LEAN_VERSION=v\d+\.\d+\.\d+$", text, re.M)
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] != "root"
    assert re.search(r"^EXPOSE 50051 9090 8081$", text, re.M)  # gRPC, metrics, health only
    assert "HEALTHCHECK" in text and 'kimina-grpc", "health"' in text and "localhost:8081" in text
    assert re.search(r"apt-get install .*\bbubblewrap\b.*\btini\b", text)
    assert 'ENTRYPOINT ["tini", "--", "kimina-grpc", "serve"]' in text  # an init that reaps
    assert "tools/install_lean.sh" in text


async def test_three_replicas_round_robin_and_one_dies_mid_run() -> None:
    apps = [create_app(settings(max_repls=1, grace_seconds=2)) for _ in range(3)]
    for app in apps:
        await app.start()
    target = ",".join(f"127.0.0.1:{app.port}" for app in apps)
    slow = "theorem t : True := by\n  -- fake: sleep 0.02\n  trivial"
    try:
        async with AsyncKiminaClient(target, batch_size=5, max_attempts=10) as client:
            # Health-checked balancing: wait until every backend is ready.
            await eventually(lambda: all(app.supervisor.ready for app in apps), what="every backend ready")
            # A comma-separated target is a cluster: the client's first call waits for the backends'
            # health answers itself (ClusterOptions.ready_wait), and places proofs on the ready ones.
            await client.verify("theorem w : True := trivial")
            batches = [[Proof(f"b{b}-{i}", f"{slow}\n-- {b} {i}") for i in range(5)] for b in range(60)]
            calls = [asyncio.create_task(client.verify(batch)) for batch in batches]
            await eventually(lambda: apps[0].supervisor.totals.completed > 0, what="replica 0 checked one")
            stopped = apps.pop(0)
            await stopped.stop()  # a replica goes away mid-run
            results = [r for call in calls for r in await call]
        ids = [r.id for r in results]
        assert sorted(ids) == sorted(p.id for batch in batches for p in batch) and len(set(ids)) == 300
        assert {r.verdict for r in results} == {Verdict.VALID}
        served = [app.supervisor.totals.completed for app in (stopped, *apps)]
        print(f"\nproofs served per replica: {served}")
        # Each id reached the caller once; what the dying replica left unanswered was checked elsewhere.
        assert all(n > 0 for n in served) and sum(served) >= 300
    finally:
        for app in apps:  # the ones still up: all three if the test failed before one went away
            await app.stop()


def test_optional_redis_is_wired_into_the_deployment() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "redis" / "redis.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    url = kinds["ConfigMap"]["data"]["url"]
    service = kinds["Service"]
    assert url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    assert service["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert settings(cache_url=url).cache_url == url  # a value the server accepts
    redis_args = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[:4] == ["--save", "", "--appendonly", "no"]  # a cache: nothing to persist
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ref = {e["name"]: e for e in container["env"]}["LEAN_SERVER_CACHE_URL"]["valueFrom"]["configMapKeyRef"]
    # Optional: without the ConfigMap the variable is unset and each pod keeps its memory cache.
    assert (ref["name"], ref["key"], ref["optional"]) == (kinds["ConfigMap"]["metadata"]["name"], "url", True)


def test_with_the_redis_cache_only_the_servers_reach_redis_and_they_may() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "redis" / "redis.yaml").read_text()) if d]
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    inbound = policies["kimina-redis"]
    assert inbound["podSelector"]["matchLabels"] == {"app": "kimina-redis"}
    assert [f["podSelector"]["matchLabels"] for f in inbound["ingress"][0]["from"]] == [{"app": "kimina-grpc"}]
    outbound = policies["kimina-grpc-to-redis"]
    assert outbound["podSelector"]["matchLabels"] == {"app": "kimina-grpc"} and outbound["policyTypes"] == ["Egress"]
    to_redis = outbound["egress"][0]
    assert to_redis["to"][0]["podSelector"]["matchLabels"] == {"app": "kimina-redis"}
    assert to_redis["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_the_image_gives_the_servers_user_no_write_access_to_the_toolchain_or_workspace() -> None:
    """Unboxed, a proof runs as the server's user: with the toolchain and workspace its own, it could
    overwrite Mathlib's .oleans, plant a `lake` in ~/.elan/bin or write the server's config."""
    text = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY --from=lean (.*)$", text, re.M)
    assert {c.split()[-1] for c in copies} == {"/home/kimina/.elan", "/home/kimina/workspace"}
    assert not [c for c in copies if "--chown" in c]  # root's, readable by all
    assert re.search(r"chown root:root /home/kimina && chmod 0755 /home/kimina", text)  # nor the home itself
    # kimina may write only ExportAst's mount points and output directories (those without .olean files).
    chowns = re.findall(r"chown (?:-R )?kimina ([^;\n]*)", text)
    assert chowns == ['"$dir"'] and "for dir in KiminaTmp .lake/build/lib/*/" in text and "-name '*.olean'" in text
    assert "docker run --read-only --tmpfs /tmp" in text


def _redis_docs() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S / "redis" / "redis.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_the_redis_cache_requires_a_password_from_a_secret() -> None:
    kinds = _redis_docs()
    redis = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert refs["REDIS_PASSWORD"] == refs["REDISCLI_AUTH"] == {"name": "kimina-redis", "key": "password"}
    assert refs["REDIS_PASSWORD"].get("optional", False) is False
    # The servers read the password from the same Secret, mounted as a file the ConfigMap names.
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ref = {e["name"]: e for e in container["env"]}["LEAN_SERVER_CACHE_PASSWORD_FILE"]["valueFrom"]["configMapKeyRef"]
    assert (ref["name"], ref["key"], ref["optional"]) == ("kimina-grpc-cache", "password_file", True)
    path = kinds["ConfigMap"]["data"]["password_file"]
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-password")
    assert volume["secret"]["secretName"] == "kimina-redis" and volume["secret"]["optional"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == "redis-password")
    assert path == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    # The guide no longer says an unboxed proof cannot reach the network.
    guide = (K8S / "README.md").read_text()
    assert "a proof cannot reach the network" not in guide and "LEAN_SERVER_CACHE_ALLOW_UNBOXED" in guide


async def test_a_shared_cache_with_the_box_off_is_refused_unless_accepted(tmp_path: Path) -> None:
    """Unboxed, a proof shares the server's network: it can write VALID for any key into Redis, for
    every replica."""
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(SandboxUnavailable, match="LEAN_SERVER_CACHE_ALLOW_UNBOXED=true"):
        create_app(settings(cache_url=url, sandbox="off"))
    app = create_app(settings(cache_url=url, sandbox="off", cache_allow_unboxed=True))
    assert any("shared cache with the sandbox off" in w for w in app.posture.warnings)
    assert not any("shared cache" in w for w in create_app(settings(sandbox="off")).posture.warnings)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValidationError, match="LEAN_SERVER_CACHE_PASSWORD_FILE"):
        settings(cache_password_file=empty)
    (tmp_path / "pw").write_text("secret")
    assert tmp_path / "pw" in settings(cache_password_file=tmp_path / "pw").secret_paths()  # masked in the box


@contextlib.contextmanager
def _redis_with_password(password: str) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--requirepass", password]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=password)

        def answers() -> bool:
            with contextlib.suppress(redis.ConnectionError):
                return bool(client.ping())
            return False

        eventually_sync(answers, what="redis-server answering")
        yield port
    finally:
        proc.kill()
        proc.wait()


async def test_the_cache_authenticates_to_redis_with_a_password_file(tmp_path: Path) -> None:
    password = "p-" + uuid.uuid4().hex
    (tmp_path / "redis-password").write_text(password + "\n")
    with _redis_with_password(password) as port:
        url = f"redis://127.0.0.1:{port}/0"

        def stored_keys() -> int:
            return len(redis.Redis(port=port, password=password).keys())

        for password_file, stored in ((None, 0), (tmp_path / "redis-password", 1)):
            app = create_app(
                settings(cache_url=url, cache_allow_unboxed=True, cache_password_file=password_file, cache_timeout=2)
            )
            await app.start()
            try:
                async with AsyncKiminaClient(f"127.0.0.1:{app.port}") as client:
                    [r] = await client.verify(f"theorem t{stored} : True := trivial")
                    assert r.verdict is Verdict.VALID  # Redis refusing us never fails a proof
                # The SET is not waited for: the server counts it stored or failed.
                remote = app.cache.remote
                assert remote is not None
                await eventually(lambda: remote.errors or stored_keys(), what="the SET done or failed")  # noqa: B023
            finally:
                await app.stop()
            assert stored_keys() == stored
