"""Validates the manifests under deploy/ (run by tests/all/container.rs).

- Kubernetes kinds: against the official schemas kubernetes-validate carries, strict (no
  unknown fields), for the Kubernetes version it defaults to.
- Custom resources (KServe ClusterServingRuntime and InferenceService, the Prometheus
  operator's ServiceMonitor and PrometheusRule), whose schemas come with their operators: every
  container they hold is validated as a core/v1 Container (inside a Pod), and the fields each
  operator requires are checked.
- Cross-references: the Service's target ports, the probes' ports, the ServiceMonitor's port
  and the kustomization's resources all name what exists.

Writes the ConfigMap's edgeinfer.toml to the path given as the first argument, so the test
parses it with the server's own config loader. Exits 1 naming every problem.
"""

import pathlib
import sys

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2] / "deploy"
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def validate(resource, where):
    try:
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as error:
        problems.append(f"{where}: {error.message} at {'/'.join(map(str, error.path))}")


def validate_containers(containers, where):
    check(containers, f"{where}: no containers")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": containers}}
    validate(pod, f"{where} (containers)")


documents = {}
for path in sorted(ROOT.rglob("*.yaml")):
    for document in yaml.safe_load_all(path.read_text()):
        if document is None:
            continue
        where = f"{path.relative_to(ROOT.parent)} {document.get('kind')}"
        documents.setdefault(document.get("kind"), []).append((path, document))
        kind = document.get("kind")
        if kind == "Kustomization":
            for resource in document["resources"]:
                check((path.parent / resource).is_file(), f"{where}: resource {resource} is missing")
        elif kind == "ClusterServingRuntime":
            spec = document["spec"]
            check(document["apiVersion"] == "serving.kserve.io/v1alpha1", f"{where}: apiVersion")
            check(spec.get("supportedModelFormats"), f"{where}: no supportedModelFormats")
            check(set(spec.get("protocolVersions", [])) <= {"v1", "v2", "grpc-v1", "grpc-v2"}, f"{where}: protocolVersions")
            validate_containers(spec["containers"], where)
        elif kind == "InferenceService":
            model = document["spec"]["predictor"]["model"]
            check(document["apiVersion"] == "serving.kserve.io/v1beta1", f"{where}: apiVersion")
            check(model["modelFormat"]["name"] == "edgeinfer", f"{where}: modelFormat")
            container = {k: v for k, v in model.items() if k not in ("modelFormat", "runtime", "protocolVersion", "storageUri")}
            validate_containers([{"name": "kserve-container", "image": "runtime", **container}], where)
        elif kind == "ServiceMonitor":
            spec = document["spec"]
            check(spec["selector"].get("matchLabels"), f"{where}: selector")
            check(all("port" in e for e in spec["endpoints"]), f"{where}: endpoints need a port name")
        elif kind == "PrometheusRule":
            for group in document["spec"]["groups"]:
                for rule in group["rules"]:
                    check(rule.get("alert") and rule.get("expr"), f"{where}: a rule without alert or expr")
        else:
            validate(document, where)

deployment = documents["Deployment"][0][1]
container = deployment["spec"]["template"]["spec"]["containers"][0]
port_names = {p["name"] for p in container["ports"]}
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    check(container[probe]["httpGet"]["port"] in port_names, f"{probe} names a port the container lacks")
check(container["securityContext"]["readOnlyRootFilesystem"] is True, "the root filesystem must be read-only")
service = documents["Service"][0][1]
for port in service["spec"]["ports"]:
    check(port["targetPort"] in port_names, f"Service port {port['name']} targets a port the container lacks")
for _, monitor in documents.get("ServiceMonitor", []):
    for endpoint in monitor["spec"]["endpoints"]:
        check(endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}, "ServiceMonitor port not in the Service")
mounts = {m["mountPath"] for m in container["volumeMounts"]}
for needed in ("/var/lib/edgeinfer/models", "/var/cache/edgeinfer", "/tmp"):
    check(needed in mounts, f"{needed} must be a volume (the root filesystem is read-only)")

config = documents["ConfigMap"][0][1]["data"]["edgeinfer.toml"]
pathlib.Path(sys.argv[1]).write_text(config)

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{sum(len(v) for v in documents.values())} manifests valid ({kubernetes_validate.latest_version()})")
