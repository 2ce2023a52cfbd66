"""The deploy files cannot drift from the binary.

For every `cronfleet` process that docker-compose.yml and the Kubernetes builds start,
this check

- finds its subcommand, flags and environment (compose `command` / `environment`;
  Kubernetes `args`, `env` with `$(VAR)` references and downward-API fields, `envFrom`
  ConfigMaps and Secrets of the same build);
- checks that the subcommand exists and that every flag (long or short) and every
  variable is one the binary lists in `cronfleet SUBCOMMAND --help`, a standard
  OpenTelemetry variable its trace export reads (OPENTELEMETRY), or in NOT_CRONFLEET with
  the reason;
- starts the servers (coordinator, worker) with exactly that command line and environment
  for a few seconds (a dry run): a value the binary rejects (a bad duration, a lease ttl
  not below the worker timeout…) makes it exit with an error, while an accepted
  configuration either keeps running or stops only at the unreachable database. Client
  commands (the compose `jobs` service's `cronfleet apply`) are run for real by
  example_jobs.py and topology.py instead;
- checks what the binary's settings imply for the manifests: probes and Service target
  ports hit the ports the process listens on, on an address the kubelet can reach; the
  pods' Prometheus scrape annotations name the HTTP port and /metrics; an OTLP endpoint
  that is a Service of the same build names one of its ports; the advertise URL names
  the gRPC port; workers get longer to stop than their drain; the compose worker can be
  scaled (no fixed name, published port or node id);
- checks the timing rule of the no-overlap promise across the processes of each build:
  every worker's lease ttl + kill grace + stop margin + loss margin fits in every
  coordinator's worker timeout, or the coordinators would refuse the workers.

Usage: flags.py --binary PATH --compose CONFIG.yaml [--kubernetes NAME=BUILD.yaml]…
(CONFIG.yaml is `docker-compose config` output; BUILD.yaml a `kustomize build`.)
"""

import argparse
import base64
import os
import re
import subprocess
import tempfile
import urllib.parse

import yaml

from deploycheck import Report, accepted, parse_duration, subcommands

# Variables set for cronfleet processes that are not cronfleet flags, and why.
NOT_CRONFLEET = {
    "RUST_LOG": "log filter, read by the binary's tracing subscriber",
    "POD_IP": "downward API, only used in $(POD_IP) references",
    "POD_NAME": "downward API, only used in $(POD_NAME) references",
}

# The standard OpenTelemetry variables the binary's trace export reads (the OpenTelemetry
# SDK's and OTLP/gRPC exporter's own, for traces; cronfleet's telemetry crate reads the
# first two to decide whether to export at all). Anything else named OTEL_* is a typo or
# a setting this binary ignores (OTLP over HTTP, metrics and logs export).
OPENTELEMETRY = {
    "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
    *(f"OTEL_EXPORTER_OTLP{signal}_{setting}" for signal in ("", "_TRACES")
      for setting in ("ENDPOINT", "HEADERS", "COMPRESSION", "TIMEOUT")),
}

# The subcommands that are long-running servers, dry-run as configured.
SERVERS = {"coordinator", "worker", "dev"}

# Downward-API fields, as a pod would see them.
FIELD_VALUES = {
    "status.podIP": "10.244.1.17",
    "metadata.name": "cronfleet-pod-7d9f8c6b5-x2x7k",
    "metadata.namespace": "cronfleet",
    "spec.nodeName": "node-1",
}

# Defaults of the listen settings (DESIGN §4 and `--help`).
DEFAULTS = {
    "CRONFLEET_GRPC": "127.0.0.1:50051",
    "CRONFLEET_HTTP": "127.0.0.1:8080",
    "CRONFLEET_WORKER_HTTP": "127.0.0.1:8081",
    "CRONFLEET_DRAIN_TIMEOUT": "30s",
    "CRONFLEET_KILL_GRACE": "2s",
    "CRONFLEET_WORKER_TIMEOUT": "6s",
    "CRONFLEET_LEASE_TTL": "2s",
}

# What a worker needs beyond its kill grace to stop its runs, and what the coordinator adds
# on top (crates/worker STOP_MARGIN, crates/coordinator LOSS_MARGIN).
STOP_MARGIN_SECONDS = 1.0
LOSS_MARGIN_SECONDS = 0.5

# How long a dry run may go on before its configuration counts as accepted.
DRY_RUN_SECONDS = 3
# What an accepted configuration may still stop at: nothing listens at the database's or
# coordinator's address here, and a port may be taken on a busy machine.
UNREACHABLE = ("cannot open the store", "cannot listen", "error connecting", "failed to lookup")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--compose", required=True)
    parser.add_argument("--kubernetes", action="append", default=[], metavar="NAME=FILE")
    options = parser.parse_args()
    options.binary = os.path.abspath(options.binary)

    report = Report("flags and environment")
    uses = compose_uses(options.compose, report)
    check_lease_timing("docker-compose.yml", uses, report)
    for spec in options.kubernetes:
        name, path = spec.split("=", 1)
        build = kubernetes_uses(name, path, report)
        check_lease_timing(name, build, report)
        uses += build

    known = subcommands(options.binary)
    checked = set()
    for use in uses:
        check_names(options.binary, known, use, report)
        key = (use["subcommand"], tuple(use["args"]), tuple(sorted(use["env"].items())))
        if use["dry_run"] and use["subcommand"] in known and key not in checked:
            checked.add(key)
            dry_run(options.binary, use, report)
    names = sorted({name for use in uses for name in use["env"]} | {
        flag for use in uses for flag in use["args"] if flag.startswith("--")})
    report.finish(
        f"{len(uses)} cronfleet processes, {len(checked)} dry runs, "
        f"{len(names)} distinct flags/variables accepted by the binary"
    )


# --------------------------------------------------------------------------- compose


def compose_uses(path, report):
    with open(path) as file:
        config = yaml.safe_load(file)
    uses = []
    for name, service in config["services"].items():
        image = str(service.get("image", ""))
        if not (is_cronfleet_image(image) or "build" in service):
            continue
        where = f"docker-compose.yml: service {name}"
        env = {key: "" if value is None else str(value)
               for key, value in (service.get("environment") or {}).items()}
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        if service.get("entrypoint"):
            report.fail(where, "entrypoint overrides the image's `cronfleet`: its command lines "
                               "cannot be checked against the binary")
            continue
        if not command:
            report.fail(where, "no command: the image's default is `--help`")
            continue
        # A client command (the `jobs` service's `apply`) is not dry-run here: it would
        # only fail to reach its server. example_jobs.py and topology.py run it for real.
        uses.append(use(where, command[0], command[1:], env, dry_run=command[0] in SERVERS))
        if command[0] == "worker":
            # `docker compose up --scale worker=N` needs replicas that differ in nothing.
            report.check("container_name" not in service, where, "a fixed container_name prevents --scale")
            report.check(not service.get("ports"), where, "published ports clash under --scale")
            report.check("CRONFLEET_NODE_ID" not in env, where,
                         "a fixed node id would be shared by every replica (the default is unique)")
        if command[0] == "worker" and report.check(
                "stop_grace_period" in service, where,
                "workers need a stop_grace_period longer than their drain timeout"):
            grace = parse_duration(service["stop_grace_period"])
            needed = drain_time(env, where, report)
            report.check(needed is None or grace > needed, where,
                         f"stop_grace_period {grace:g}s must exceed drain timeout + kill grace ({needed}s)")
    return uses


# ------------------------------------------------------------------------ kubernetes


def kubernetes_uses(build_name, path, report):
    with open(path) as file:
        objects = [doc for doc in yaml.safe_load_all(file) if doc]
    config_maps = {o["metadata"]["name"]: o.get("data") or {}
                   for o in objects if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: secret_data(o) for o in objects if o["kind"] == "Secret"}
    uses = []
    workloads = []
    for obj in objects:
        template = pod_template(obj)
        if template is None:
            continue
        workloads.append((obj, template))
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            if not is_cronfleet_image(container.get("image", "")):
                continue
            where = f"{build_name}: {obj['kind']} {obj['metadata']['name']}, container {container['name']}"
            if container.get("command") and container["command"][0] != "cronfleet":
                report.fail(where, "command overrides the image's `cronfleet` entrypoint")
                continue
            args = [str(arg) for arg in container.get("args", [])]
            if not report.check(args, where, "no args: the image's default is `--help`"):
                continue
            env = container_env(container, config_maps, secrets, where, report)
            uses.append(use(where, args[0], args[1:], env))
            check_ports(where, args[0], container, pod, env, report)
            check_scrape_annotations(where, args[0], template, env, report)
            check_otlp_endpoint(where, env, objects, report)
    check_services(build_name, objects, workloads, report)
    return uses


def pod_template(obj):
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return None


def secret_data(obj):
    data = {key: base64.b64decode(value).decode() for key, value in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data


def container_env(container, config_maps, secrets, where, report):
    """The environment the container's process sees, resolved as the kubelet would."""
    env = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            values = config_maps.get(source["configMapRef"]["name"])
        else:
            values = secrets.get(source["secretRef"]["name"])
        if values is None:
            report.fail(where, f"envFrom {source} is not in the build")
            continue
        env.update({prefix + key: str(value) for key, value in values.items()})
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                               lambda m: env.get(m.group(1), m.group(0)), str(variable["value"]))
            if "$(" in env[name]:
                report.fail(where, f"{name} refers to a variable defined after it or nowhere: {variable['value']}")
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            env[name] = FIELD_VALUES.get(source["fieldRef"]["fieldPath"], "field")
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            # A Secret managed out of band (production) is not in the build.
            env[name] = secrets.get(ref["name"], {}).get(ref["key"], placeholder(name))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = config_maps.get(ref["name"], {}).get(ref["key"], "")
        else:
            env[name] = "resource"
    return env


def placeholder(name):
    if name == "CRONFLEET_DATABASE_URL":
        return "postgres://cronfleet:secret@db.example.invalid:5432/cronfleet"
    return "secret"


def port_of(address):
    return int(address.rsplit(":", 1)[1].rstrip("/"))


def container_port(container, port):
    """A probe's or Service's port (a number or a port name) as a number."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    return None


def check_ports(where, subcommand, container, pod, env, report):
    http_setting = {"coordinator": "CRONFLEET_HTTP", "worker": "CRONFLEET_WORKER_HTTP"}.get(subcommand)
    if http_setting:
        address = env.get(http_setting, DEFAULTS[http_setting])
        report.check(address.startswith(("0.0.0.0:", "[::]:")), where,
                     f"{http_setting}={address} is not reachable by the kubelet's probes (listen on 0.0.0.0)")
        for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            probe = container.get(probe_name)
            if not report.check(probe and "httpGet" in probe, where, f"no HTTP {probe_name}"):
                continue
            report.check(probe["httpGet"]["path"] == path, where,
                         f"{probe_name} should ask {path}, asks {probe['httpGet']['path']}")
            report.check(container_port(container, probe["httpGet"]["port"]) == port_of(address), where,
                         f"{probe_name} port {probe['httpGet']['port']} is not {http_setting}'s port {port_of(address)}")
    if subcommand == "coordinator":
        grpc = port_of(env.get("CRONFLEET_GRPC", DEFAULTS["CRONFLEET_GRPC"]))
        report.check(grpc in [p["containerPort"] for p in container.get("ports", [])], where,
                     f"CRONFLEET_GRPC's port {grpc} is not a containerPort")
        advertise = env.get("CRONFLEET_ADVERTISE_URL", "")
        report.check(advertise.endswith(f":{grpc}"), where,
                     f"CRONFLEET_ADVERTISE_URL {advertise!r} should name the gRPC port {grpc}")
    if subcommand == "worker":
        grace = pod.get("terminationGracePeriodSeconds", 30)
        needed = drain_time(env, where, report)
        report.check(needed is None or grace > needed, where,
                     f"terminationGracePeriodSeconds {grace} must exceed drain timeout + kill grace ({needed}s)")


def check_scrape_annotations(where, subcommand, template, env, report):
    """Coordinators and workers ask Prometheus to scrape /metrics on their HTTP port."""
    http_setting = {"coordinator": "CRONFLEET_HTTP", "worker": "CRONFLEET_WORKER_HTTP"}.get(subcommand)
    if not http_setting:
        return
    annotations = template["metadata"].get("annotations") or {}
    port = port_of(env.get(http_setting, DEFAULTS[http_setting]))
    for name, expected in (("prometheus.io/scrape", "true"), ("prometheus.io/port", str(port)),
                           ("prometheus.io/path", "/metrics")):
        report.check(annotations.get(name) == expected, where,
                     f"pod annotation {name} is {annotations.get(name)!r}, should be {expected!r} "
                     f"(/metrics is served on {http_setting}'s port {port})")


def check_otlp_endpoint(where, env, objects, report):
    """An OTLP endpoint that names a Service of the same build hits one of its ports."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint:
        return
    url = urllib.parse.urlsplit(endpoint)
    try:
        port = url.port
    except ValueError:
        port = None
    if not report.check(url.scheme in ("http", "https") and url.hostname and port, where,
                        f"OTLP endpoint {endpoint!r} should be http(s)://HOST:PORT (OTLP over gRPC, usually 4317)"):
        return
    namespace = next((o["metadata"].get("namespace") for o in objects if o["kind"] == "Service"), None)
    host = (url.hostname or "").split(".")
    # SERVICE, SERVICE.NAMESPACE or SERVICE.NAMESPACE.svc[.cluster.local]
    if len(host) > 1 and host[1] != namespace:
        return
    for service in (o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == host[0]):
        ports = [p["port"] for p in service["spec"]["ports"]]
        report.check(port in ports, where,
                     f"OTLP endpoint {endpoint} names Service {host[0]}, which has ports {ports}, not {port}")


def check_services(build_name, objects, workloads, report):
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"].get("selector") or {}
        pods = [template for _, template in workloads
                if selector and selector.items() <= (template["metadata"].get("labels") or {}).items()]
        where = f"{build_name}: Service {service['metadata']['name']}"
        if not report.check(pods, where, f"selects no pod template ({selector})"):
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            report.check(
                all(any(container_port(c, target) in [p["containerPort"] for p in c.get("ports", [])]
                        for c in template["spec"]["containers"]) for template in pods),
                where, f"targetPort {target} is not a port of the pods it selects")


# ----------------------------------------------------------------------------- shared


def is_cronfleet_image(image):
    return re.search(r"(^|/)cronfleet(:|@|$)", image) is not None


def use(where, subcommand, args, env, dry_run=True):
    return {"where": where, "subcommand": subcommand, "args": list(args), "env": env, "dry_run": dry_run}


def setting(use, name, report):
    """A server setting in seconds: its flag in the args, else its variable, else the default."""
    flag = "--" + name.removeprefix("CRONFLEET_").lower().replace("_", "-")
    args = use["args"]
    value = use["env"].get(name, DEFAULTS[name])
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    try:
        return parse_duration(value)
    except ValueError as error:
        report.fail(use["where"], f"{name}: {error}")
        return None


def check_lease_timing(build, uses, report):
    """Every worker of a build fits every coordinator's timing rule (DESIGN §2, invariant 1)."""
    coordinators = [u for u in uses if u["subcommand"] == "coordinator"]
    workers = [u for u in uses if u["subcommand"] == "worker"]
    for coordinator in coordinators:
        timeout = setting(coordinator, "CRONFLEET_WORKER_TIMEOUT", report)
        lease = setting(coordinator, "CRONFLEET_LEASE_TTL", report)
        for worker in workers:
            grace = setting(worker, "CRONFLEET_KILL_GRACE", report)
            if None in (timeout, lease, grace):
                continue
            needed = lease + grace + STOP_MARGIN_SECONDS + LOSS_MARGIN_SECONDS
            report.check(needed <= timeout, worker["where"],
                         f"{build}: kill grace {grace:g}s: lease ttl {lease:g}s + grace + "
                         f"{STOP_MARGIN_SECONDS + LOSS_MARGIN_SECONDS:g}s = {needed:g}s does not fit in the "
                         f"worker timeout {timeout:g}s of {coordinator['where']}: the coordinators refuse this worker")


def drain_time(env, where, report):
    """How long a worker may take to stop: drain timeout + kill grace (None if unreadable)."""
    try:
        return sum(parse_duration(env.get(name, DEFAULTS[name]))
                   for name in ("CRONFLEET_DRAIN_TIMEOUT", "CRONFLEET_KILL_GRACE"))
    except ValueError as error:
        report.fail(where, str(error))
        return None


def check_names(binary, known, use, report):
    where, subcommand = use["where"], use["subcommand"]
    if not report.check(subcommand in known, where,
                        f"`cronfleet {subcommand}` does not exist (commands: {', '.join(sorted(known))})"):
        return
    flags, shorts, envs = accepted(binary, subcommand)
    for arg in use["args"]:
        if arg.startswith("--"):
            flag = arg[2:].split("=", 1)[0]
            report.check(flag in flags, where, f"`cronfleet {subcommand}` has no flag --{flag}")
        elif re.match(r"-[A-Za-z]", arg):
            report.check(arg[1] in shorts, where, f"`cronfleet {subcommand}` has no flag -{arg[1]}")
    for name in use["env"]:
        if name.startswith("OTEL_"):
            report.check(name in OPENTELEMETRY, where,
                         f"{name} is not a standard OpenTelemetry variable that cronfleet's trace export "
                         f"reads (it reads {', '.join(sorted(OPENTELEMETRY))})")
            continue
        report.check(name in envs or name in NOT_CRONFLEET, where,
                     f"`cronfleet {subcommand}` reads no variable {name}"
                     + (f" (it reads {', '.join(sorted(envs))})" if name.startswith("CRONFLEET_") else ""))


def dry_run(binary, use, report):
    """Starts the process as configured; a rejected value ends it at once with an error."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(use["env"])
    with tempfile.TemporaryDirectory() as home:
        env["HOME"] = home
        process = subprocess.Popen([binary, use["subcommand"], *use["args"]], env=env, cwd=home,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = process.communicate(timeout=DRY_RUN_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return  # it runs: the configuration was accepted
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    shown = (errors or lines[-1:] or ["(nothing on stderr)"])[0]
    if process.returncode != 0 and any(reason in stderr for reason in UNREACHABLE):
        return
    report.fail(use["where"], f"`cronfleet {use['subcommand']}` with this configuration exited "
                              f"{process.returncode}: {shown}")


if __name__ == "__main__":
    main()
