"""Offline checks of pokeq's deployment files that no generic linter makes.

Run by deploy/check.sh inside its venv (needs PyYAML, kubernetes-validate and
cloudcoil-models-keda); prints one OK/FAIL line per check and exits 1 if any failed.

- compose: docker-compose.yml interpolated with .env.example the way Compose does it (every
  required variable is in .env.example; the rendered RabbitMQ user file is valid JSON; the
  AMQP vhost is the one of definitions.json; references between services, configs and files
  hold; the Rust services run read-only, without new privileges, scalable).
- definitions: deploy/rabbitmq/definitions.json is well formed and self-consistent (the exact
  comparison with the topology the code declares is a Rust test of the workspace).
- k8s: deploy/k8s built the way kustomize would for what it uses (resources, namespace,
  configMapGenerator, images), every core object validated strictly against the Kubernetes
  OpenAPI schemas shipped in kubernetes-validate, for the oldest and the newest supported
  version; KEDA objects validated against the KEDA CRD models of cloudcoil-models-keda
  (unknown fields rejected); the references between them resolved.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

# Oldest Kubernetes the manifests are meant for (podFailurePolicy is GA from 1.31), and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.31.0", "latest")

failures = 0


def report(name: str, check: Callable[[], str | None]) -> None:
    """Run one check; it returns an optional detail or raises AssertionError on failure."""
    global failures
    try:
        detail = check()
    except AssertionError as e:
        failures += 1
        print(f"FAIL {name}: {e}")
    except Exception as e:  # a crash of a check is a failure of that check
        failures += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        print(f"OK   {name}" + (f" ({detail})" if detail else ""))


# --------------------------------------------------------------------------------- helpers


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), (
            f"{path.name}:{number}: not KEY=value: {raw!r}"
        )
        env[key] = value
    return env


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: dict[str, str], where: str) -> str:
    """Compose's variable interpolation ($$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e},
    ${VAR?e}, ${VAR:+r}, ${VAR+r}), nested defaults included (${A:-x${B}y}), innermost
    first; a missing required variable is an AssertionError."""

    def substitute(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return arg if unset else value  # type: ignore[return-value]
        if op in (":?", "?"):
            missing = value is None or (op == ":?" and value == "")
            assert not missing, f"{where}: required variable {name} is not in .env.example ({arg})"
            return value  # type: ignore[return-value]
        if op in (":+", "+"):
            present = value is not None and (op == "+" or value != "")
            return arg if present else ""
        return value or ""

    # `$$` is set aside first, so that the `$` it leaves is never read as a variable.
    parts = text.split("$$")
    for i, part in enumerate(parts):
        while True:
            done = _VAR.sub(substitute, part)
            if done == part:
                break
            part = done
        parts[i] = part
    return "$".join(parts)


def interpolate_tree(node: Any, env: dict[str, str], where: str = "$") -> Any:
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, where)
    return node


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"{path.name}: a document is not a mapping"
    return docs


def dockerfile_uid() -> int:
    text = (DEPLOY / "Dockerfile").read_text()
    m = re.search(r"useradd\b[^\n]*?--uid (\d+)", text)
    assert m, "Dockerfile: no `useradd --uid N` found"
    uid = int(m.group(1))
    assert re.search(rf"^USER {uid}(:\d+)?\s*$", text, re.M), f"Dockerfile: no `USER {uid}` line"
    return uid


# --------------------------------------------------------------------------------- compose


def definitions() -> dict[str, Any]:
    return json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())


def check_definitions() -> str:
    d = definitions()
    allowed = {"vhosts", "exchanges", "queues", "bindings", "users", "permissions"}
    assert set(d) <= allowed, f"unexpected top-level keys {sorted(set(d) - allowed)}"
    vhosts = {v["name"] for v in d.get("vhosts", [])}
    assert vhosts, "no vhost"
    exchanges = {(e["vhost"], e["name"]) for e in d["exchanges"]}
    queues = {(q["vhost"], q["name"]) for q in d["queues"]}
    assert len(exchanges) == len(d["exchanges"]), "duplicate exchange"
    assert len(queues) == len(d["queues"]), "duplicate queue"
    for kind, items in (("exchange", d["exchanges"]), ("queue", d["queues"])):
        for item in items:
            assert item["vhost"] in vhosts, f"{kind} {item['name']}: unknown vhost {item['vhost']}"
            assert item["durable"] is True and item["auto_delete"] is False, (
                f"{kind} {item['name']}: must be durable and not auto-delete"
            )
            assert isinstance(item["arguments"], dict), f"{kind} {item['name']}: arguments"
    for e in d["exchanges"]:
        assert e["type"] in ("direct", "fanout", "topic", "headers"), f"exchange {e['name']}: type"
    for b in d["bindings"]:
        assert (b["vhost"], b["source"]) in exchanges, f"binding from unknown exchange {b['source']}"
        assert b["destination_type"] == "queue", f"binding to {b['destination']}: not a queue"
        assert (b["vhost"], b["destination"]) in queues, f"binding to unknown queue {b['destination']}"
    for q in d["queues"]:
        dlx = q["arguments"].get("x-dead-letter-exchange")
        assert dlx is None or (q["vhost"], dlx) in exchanges, f"queue {q['name']}: unknown DLX {dlx}"
    return f"{len(exchanges)} exchanges, {len(queues)} queues, {len(d['bindings'])} bindings"


def check_compose() -> str:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = read_env_file(ROOT / ".env.example")
    c = interpolate_tree(raw, env)
    services: dict[str, Any] = c["services"]
    configs: dict[str, Any] = c.get("configs", {})
    volumes: dict[str, Any] = c.get("volumes", {})

    for name, s in services.items():
        assert "container_name" not in s, f"{name}: container_name prevents scaling"
        for dep in s.get("depends_on", {}):
            assert dep in services, f"{name}: depends_on unknown service {dep}"
        for ref in s.get("configs", []):
            source = ref["source"] if isinstance(ref, dict) else ref
            assert source in configs, f"{name}: unknown config {source}"
        for v in s.get("volumes", []):
            source = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if source and not source.startswith((".", "/")):
                assert source in volumes, f"{name}: unknown volume {source}"
    for name, cfg in configs.items():
        if "file" in cfg:
            assert (ROOT / cfg["file"]).is_file(), f"config {name}: missing file {cfg['file']}"

    # The pokeq image services.
    pokeq = {n: s for n, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}
    assert {"producer", "consumer", "pokeapi-stub"} <= set(pokeq), f"pokeq services: {sorted(pokeq)}"
    images = {s["image"] for s in pokeq.values()}
    assert len(images) == 1, f"pokeq services use several image names: {images}"
    for name, s in pokeq.items():
        assert s.get("read_only") is True, f"{name}: not read_only"
        assert "no-new-privileges:true" in s.get("security_opt", []), f"{name}: no no-new-privileges"
    consumer = services["consumer"]
    assert "ports" not in consumer, "consumer: host ports prevent --scale"
    assert consumer["deploy"]["replicas"] == 3, "consumer: deploy.replicas is not 3"
    grace = consumer.get("stop_grace_period", "10s")
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > 30, f"consumer: stop_grace_period {grace} <= 30s"
    assert str(services["producer"].get("restart", "")).startswith("on-failure"), "producer: restart"
    assert services["pokeapi-stub"].get("profiles") == ["offline"], "pokeapi-stub: not in profile offline"
    for name in ("rabbitmq", "postgres"):
        assert "healthcheck" in services[name], f"{name}: no healthcheck"
        for dependant in ("producer", "consumer"):
            cond = services[dependant]["depends_on"][name]["condition"]
            assert cond == "service_healthy", f"{dependant}: waits for {name} with {cond}"

    # RabbitMQ: the definitions directory holds the topology first, then the rendered user.
    targets = {ref["target"]: ref["source"] for ref in services["rabbitmq"]["configs"]}
    defs_dir = "/etc/rabbitmq/definitions.d/"
    in_dir = sorted((t, s) for t, s in targets.items() if t.startswith(defs_dir))
    assert [s for _, s in in_dir] == ["rabbitmq-topology", "rabbitmq-users"], f"definitions.d: {in_dir}"
    conf = (ROOT / configs[targets["/etc/rabbitmq/conf.d/30-pokeq.conf"]]["file"]).read_text()
    assert re.search(rf"^load_definitions = {defs_dir.rstrip('/')}\s*$", conf, re.M), "rabbitmq.conf: load_definitions"
    users = json.loads(configs["rabbitmq-users"]["content"])
    user = env["RABBITMQ_USER"]
    assert [u["name"] for u in users["users"]] == [user], "rendered users: name"
    assert users["users"][0]["password"] == env["RABBITMQ_PASS"], "rendered users: password"
    vhosts = {v["name"] for v in definitions()["vhosts"]}
    for p in users["permissions"]:
        assert p["user"] == user and p["vhost"] in vhosts, f"rendered permission {p}"

    # Every pokeq service reaches the broker's vhost and the compose database.
    for name, s in pokeq.items():
        envs = s.get("environment", {})
        if isinstance(envs, list):
            continue  # the stub takes no broker or database
        amqp = envs["AMQP_URL"]
        m = re.fullmatch(r"amqp://([^:@/]+):([^@/]+)@rabbitmq:5672/([^/]+)", amqp)
        assert m, f"{name}: AMQP_URL {amqp!r}"
        assert m.group(1) == user and m.group(2) == env["RABBITMQ_PASS"], f"{name}: AMQP credentials"
        assert m.group(3) in vhosts, f"{name}: AMQP vhost {m.group(3)} not in definitions.json"
        db = envs["DATABASE_URL"]
        assert db.endswith("@postgres:5432/pokeq"), f"{name}: DATABASE_URL {db!r}"
        assert envs["POKEQ_PREFIX"] == "pokeq", f"{name}: POKEQ_PREFIX must match definitions.json"
    check_compose_cluster(raw, env, services, configs, volumes)
    offline = dict(env, POKEAPI_URL="http://pokeapi-stub:8080/api/v2")
    url = interpolate_tree(raw, offline)["services"]["consumer"]["environment"]["POKEAPI_URL"]
    assert url == "http://pokeapi-stub:8080/api/v2", f"offline POKEAPI_URL is {url}"
    return f"{len(services)} services"


def check_compose_cluster(raw: Any, env: dict[str, str], services: dict[str, Any],
                          configs: dict[str, Any], volumes: dict[str, Any]) -> None:
    """The `cluster` profile: three nodes that name each other as peers, share the cookie and a
    vhost, and the services' AMQP_URL switched to them by POKEQ_AMQP_URL."""
    nodes = sorted(n for n, s in services.items() if "cluster" in s.get("profiles", []))
    assert nodes == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"], f"cluster nodes: {nodes}"
    conf = (ROOT / configs["rabbitmq-cluster-conf"]["file"]).read_text()
    assert re.search(r"^cluster_formation.peer_discovery_backend = classic_config\s*$", conf, re.M), "cluster.conf: backend"
    peers = re.findall(r"^cluster_formation.classic_config.nodes.\d+ = rabbit@(\S+)\s*$", conf, re.M)
    assert peers == nodes, f"cluster.conf: peers {peers}, services {nodes}"
    cookie = configs["rabbitmq-erlang-cookie"]["content"]
    assert cookie == env["RABBITMQ_ERLANG_COOKIE"], "the cookie comes from RABBITMQ_ERLANG_COOKIE"
    users = json.loads(configs["rabbitmq-cluster-users"]["content"])
    assert [v["name"] for v in users["vhosts"]] == ["pokeq"], "cluster users: vhost"
    assert [u["name"] for u in users["users"]] == [env["RABBITMQ_USER"]], "cluster users: name"
    for name in nodes:
        s = services[name]
        assert s["hostname"] == name, f"{name}: hostname (the node is rabbit@<hostname>)"
        assert "healthcheck" in s, f"{name}: no healthcheck"
        targets = {ref["target"]: ref["source"] for ref in s["configs"]}
        assert targets.get("/etc/rabbitmq/conf.d/40-cluster.conf") == "rabbitmq-cluster-conf", f"{name}: cluster.conf"
        assert targets.get("/etc/rabbitmq/definitions.d/20-users.json") == "rabbitmq-cluster-users", f"{name}: users"
        cookie_at = next(t for t, src in targets.items() if src == "rabbitmq-erlang-cookie")
        assert cookie_at in " ".join(s["entrypoint"]), f"{name}: the entrypoint does not install the cookie"
        data = [v for v in s["volumes"] if v.endswith(":/var/lib/rabbitmq")]
        assert len(data) == 1 and data[0].split(":")[0] in volumes, f"{name}: own data volume"
        for dependant in ("producer", "consumer"):
            dep = services[dependant]["depends_on"][name]
            assert dep == {"condition": "service_healthy", "required": False}, f"{dependant} on {name}: {dep}"
    datas = {services[n]["volumes"][0] for n in nodes}
    assert len(datas) == len(nodes), "cluster nodes share a data volume"
    # The commented example in .env.example, uncommented: every service on the three nodes.
    example = (ROOT / ".env.example").read_text()
    m = re.search(r"^# POKEQ_AMQP_URL=(\S+)$", example, re.M)
    assert m, ".env.example: no POKEQ_AMQP_URL example"
    urls = m.group(1).split(",")
    hosts = [re.fullmatch(r"amqp://[^:@/]+:[^@/]+@([^:/]+):5672/pokeq", u) for u in urls]
    assert all(hosts) and [h.group(1) for h in hosts if h] == nodes, f".env.example POKEQ_AMQP_URL: {urls}"
    switched = interpolate_tree(raw, dict(env, POKEQ_AMQP_URL=m.group(1)))["services"]
    for name in ("producer", "consumer", "pokeq"):
        assert switched[name]["environment"]["AMQP_URL"] == m.group(1), f"{name}: AMQP_URL not switched"


# ------------------------------------------------------------------------------ kubernetes

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def build_kustomization() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and k.get("kind") == "Kustomization"
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator", "images"}
    assert set(k) <= known, f"kustomization.yaml: keys this check does not model: {sorted(set(k) - known)}"
    assert "secretGenerator" not in k, "no secretGenerator: the Secret is created by the operator"
    docs: list[dict[str, Any]] = []
    for res in k["resources"]:
        path = K8S / res
        assert path.is_file(), f"kustomization.yaml: missing resource {res}"
        docs.extend(load_yaml_docs(path))
    listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(k["resources"]), f"YAML files not listed in resources: {sorted(listed - set(k['resources']))}"
    for gen in k.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in gen.get("envs", []):
            data.update(read_env_file(K8S / env_file))
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    images = {i["name"]: i for i in k.get("images", [])}
    pairs: dict[str, str] = {}
    for group in k.get("labels", []):
        pairs.update(group["pairs"])
    for d in docs:
        meta = d.setdefault("metadata", {})
        if d["kind"] == "Namespace":
            meta["name"] = k["namespace"]
        elif d["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        meta.setdefault("labels", {}).update(pairs)
        for c in containers(d):
            image = images.get(c["image"])
            assert image, f"{d['kind']}/{meta['name']}: image {c['image']} has no `images` entry"
            c["image"] = f"{image.get('newName', c['image'])}:{image['newTag']}"
    return k, docs


def pod_spec(d: dict[str, Any]) -> dict[str, Any] | None:
    kind = d["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return d["spec"]["template"]["spec"]
    if kind == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(d: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(d)
    return [] if spec is None else spec.get("containers", []) + spec.get("initContainers", [])


def check_k8s_schemas(docs: list[dict[str, Any]]) -> str:
    import kubernetes_validate

    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    for version in K8S_VERSIONS:
        v = kubernetes_validate.latest_version() if version == "latest" else version
        for d in core:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{d['kind']}/{d['metadata']['name']} against {v}: {e.message} at {list(e.path)}")
    versions = ", ".join(kubernetes_validate.latest_version() if v == "latest" else v for v in K8S_VERSIONS)
    return f"{len(core)} objects, Kubernetes {versions}"


def check_keda_schemas(docs: list[dict[str, Any]]) -> str:
    from cloudcoil.models.keda import v1alpha1

    keda = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}, "KEDA objects"
    for d in keda:
        assert d["apiVersion"] == "keda.sh/v1alpha1", f"{d['kind']}: apiVersion {d['apiVersion']}"
        model = getattr(v1alpha1, d["kind"]).model_validate(d)
        # The models ignore unknown fields: a field lost on the way back was not in the CRD.
        back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert back == d, f"{d['kind']}/{d['metadata']['name']}: fields not in the CRD: {diff(d, back)}"
    return f"{len(keda)} objects, KEDA CRD models of cloudcoil-models-keda"


def diff(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}" for k in a if k not in b]
        for k in a:
            if k in b:
                out += diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (p, q) in enumerate(zip(a, b)) for x in diff(p, q, f"{where}[{i}]")]
    return [] if a == b else [where]


def check_k8s_references(k: dict[str, Any], docs: list[dict[str, Any]]) -> str:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert not by_kind.get("Secret"), "no Secret in the manifests: it is created by the operator"
    ns = k["namespace"]
    assert ns in by_kind.get("Namespace", {}), f"namespace {ns} is not created"
    config_maps = set(by_kind.get("ConfigMap", {}))
    settings = next(iter(by_kind["ConfigMap"].values()))["data"]
    uid = dockerfile_uid()
    secret_keys = {"AMQP_URL", "DATABASE_URL"}

    workloads = [d for d in docs if pod_spec(d) is not None]
    assert {d["kind"] for d in workloads} == {"Deployment", "CronJob", "Job"}, "workload kinds"
    for d in workloads:
        name = f"{d['kind']}/{d['metadata']['name']}"
        spec = pod_spec(d)
        assert spec is not None
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot"
        assert psc.get("runAsUser") == uid, f"{name}: runAsUser is not the image's uid {uid}"
        assert spec.get("automountServiceAccountToken") is False, f"{name}: service account token mounted"
        for c in containers(d):
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: allowPrivilegeEscalation"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}: drop ALL"
            assert c.get("resources", {}).get("requests") and c["resources"].get("limits"), f"{name}/{c['name']}: resources"
            refs = c.get("envFrom", [])
            cms = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
            secrets = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
            assert cms and set(cms) <= config_maps, f"{name}/{c['name']}: configMapRef {cms}"
            assert secrets == ["pokeq-credentials"], f"{name}/{c['name']}: secretRef {secrets}"
        if d["kind"] in ("Job", "CronJob"):
            assert spec["restartPolicy"] == "Never", f"{name}: restartPolicy (podFailurePolicy needs Never)"

    cron = by_kind["CronJob"]["pokeq-producer"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid", "producer CronJob: concurrencyPolicy"
    assert containers(cron)[0]["command"] == ["producer"], "producer CronJob: command"
    job = by_kind["Job"]["pokeq-migrate"]
    assert containers(job)[0]["command"] == ["pokeq", "migrate"], "migrate Job: command"

    deploy = by_kind["Deployment"]["pokeq-consumer"]
    assert "replicas" not in deploy["spec"], "consumer Deployment: replicas belongs to KEDA"
    spec = pod_spec(deploy)
    assert spec is not None
    c = spec["containers"][0]
    assert c["command"] == ["consumer"], "consumer: command"
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    listen_port = int(settings["METRICS_ADDR"].rsplit(":", 1)[1])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"consumer {probe}: path {get['path']}"
        assert port.get(get["port"], get["port"]) == listen_port, f"consumer {probe}: port"
    grace = settings["POKEQ_SHUTDOWN_GRACE"]
    assert re.fullmatch(r"\d+s", grace), f"POKEQ_SHUTDOWN_GRACE {grace}"
    assert spec["terminationGracePeriodSeconds"] > int(grace[:-1]), "terminationGracePeriodSeconds <= shutdown grace"
    template_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for key, value in deploy["spec"]["selector"]["matchLabels"].items():
        assert template_labels.get(key) == value, "consumer: selector does not match the pod labels"

    auths = by_kind["TriggerAuthentication"]
    for a in auths.values():
        for ref in a["spec"]["secretTargetRef"]:
            assert ref["name"] == "pokeq-credentials" and ref["key"] in secret_keys, f"TriggerAuthentication {ref}"
    so = by_kind["ScaledObject"]["pokeq-consumer"]
    target = so["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment" and target["name"] in by_kind["Deployment"], "scaleTargetRef"
    for t in so["spec"]["triggers"]:
        assert t["type"] == "rabbitmq", f"trigger {t['type']}"
        assert t["authenticationRef"]["name"] in auths, "trigger authenticationRef"
        assert t["metadata"]["queueName"] == f"{settings['POKEQ_PREFIX']}.jobs", "trigger queueName"
        assert "host" not in t["metadata"], "trigger host must come from the TriggerAuthentication"
    return f"{len(docs)} objects"


def check_k8s_rabbitmq_cluster(docs: list[dict[str, Any]]) -> str:
    """deploy/k8s/rabbitmq-cluster: the base plus a RabbitmqCluster of three, and patches that
    point the consumer and the producer at its Service with the operator's default user."""
    import copy

    import kubernetes_validate

    here = K8S / "rabbitmq-cluster"
    k = yaml.safe_load((here / "kustomization.yaml").read_text())
    assert k.get("kind") == "Kustomization", "rabbitmq-cluster: kind"
    assert set(k) <= {"apiVersion", "kind", "resources", "patches"}, f"rabbitmq-cluster: keys {sorted(k)}"
    assert k["resources"] == ["../", "rabbitmqcluster.yaml"], f"rabbitmq-cluster: resources {k['resources']}"
    patches = [p["path"] for p in k["patches"]]
    listed = {p.name for p in here.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(k["resources"][1:] + patches), f"rabbitmq-cluster: files not listed {sorted(listed)}"
    ns = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]

    (cluster,) = load_yaml_docs(here / "rabbitmqcluster.yaml")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1" and cluster["kind"] == "RabbitmqCluster", "RabbitmqCluster kind"
    assert cluster["spec"]["replicas"] == 3, "RabbitmqCluster: three replicas"
    name = cluster["metadata"]["name"]
    known = {"replicas", "image", "resources", "persistence", "rabbitmq", "affinity", "service", "tls", "override", "tolerations", "imagePullSecrets", "terminationGracePeriodSeconds", "skipPostDeploySteps", "delayStartSeconds", "secretBackend"}
    assert set(cluster["spec"]) <= known, f"RabbitmqCluster: fields not in its CRD {sorted(set(cluster['spec']) - known)}"
    expected_url = f"amqp://$(RABBITMQ_USER):$(RABBITMQ_PASS)@{name}.{ns}.svc:5672/%2f"

    built = copy.deepcopy(docs)
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in built}
    patched = []
    for path in patches:
        (patch,) = load_yaml_docs(here / path)
        key = (patch["kind"], patch["metadata"]["name"])
        assert key in by_key, f"{path}: patches {key}, which the base does not have"
        target = by_key[key]
        for pc in containers(patch):
            (tc,) = [c for c in containers(target) if c["name"] == pc["name"]]
            env = {e["name"]: e for e in pc["env"]}
            names = [e["name"] for e in pc["env"]]
            assert names.index("AMQP_URL") > max(names.index("RABBITMQ_USER"), names.index("RABBITMQ_PASS")), (
                f"{path}: $(VAR) refers only to variables defined before it"
            )
            assert env["AMQP_URL"]["value"] == expected_url, f"{path}: AMQP_URL {env['AMQP_URL']['value']}"
            for var, field in (("RABBITMQ_USER", "username"), ("RABBITMQ_PASS", "password")):
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": f"{name}-default-user", "key": field}, f"{path}: {var} from {ref}"
            tc["env"] = [e for e in tc.get("env", []) if e["name"] not in env] + pc["env"]
        patched.append(target)
    assert {d["kind"] for d in patched} == {"Deployment", "CronJob"}, "the consumer and the producer are patched"
    for version in K8S_VERSIONS:
        v = kubernetes_validate.latest_version() if version == "latest" else version
        for d in patched:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"patched {d['kind']}/{d['metadata']['name']} against {v}: {e.message}")
    return f"RabbitmqCluster {name} x3, {len(patched)} workloads on {name}.{ns}.svc"


# ------------------------------------------------------------------------------------ main


def main() -> int:
    report("definitions.json well formed", check_definitions)
    report("compose interpolated with .env.example", check_compose)
    built: dict[str, Any] = {}

    def build() -> str:
        built["k"], built["docs"] = build_kustomization()
        return f"{len(built['docs'])} objects"

    report("k8s kustomization builds", build)
    if "docs" in built:
        report("k8s core objects vs Kubernetes schemas (strict)", lambda: check_k8s_schemas(built["docs"]))
        report("k8s KEDA objects vs KEDA CRD models", lambda: check_keda_schemas(built["docs"]))
        report("k8s references and hardening", lambda: check_k8s_references(built["k"], built["docs"]))
        report("k8s rabbitmq-cluster overlay", lambda: check_k8s_rabbitmq_cluster(built["docs"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
