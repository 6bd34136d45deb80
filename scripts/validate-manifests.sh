#!/usr/bin/env bash
# Validates deploy/kubernetes against the Kubernetes API schemas, offline: kubernetes-validate
# (PyPI) carries them. KEDA's ScaledObject is checked against the subset of its CRD in
# deploy/kubernetes/schemas, and the kustomization must list every manifest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/torch-env.sh"
. "$root/scripts/venv.sh"
version="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
venv="$XCAM_CACHE/kubernetes-validate-$version"
ensure_venv "$venv" "kubernetes-validate==$version"
cd "$root/deploy/kubernetes"
"$venv/bin/python" - <<'PY'
import glob, json, subprocess, sys, yaml, jsonschema

files = sorted(f for f in glob.glob("*.yaml") if f != "kustomization.yaml")
listed = sorted(yaml.safe_load(open("kustomization.yaml"))["resources"])
if listed != files:
    sys.exit(f"kustomization.yaml lists {listed}, but the directory holds {files}")
keda = json.load(open("schemas/keda-scaledobject.json"))
core = []
for f in files:
    for doc in yaml.safe_load_all(open(f)):
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, keda)
            print(f"ok   {f}: {doc['kind']}/{doc['metadata']['name']} (KEDA schema subset)")
        else:
            core.append(f)
core = sorted(set(core))
out = subprocess.run([sys.prefix + "/bin/kubernetes-validate", "--strict", *core],
                     capture_output=True, text=True)
print(out.stdout + out.stderr, end="")
if out.returncode != 0 or "WARN" in out.stdout + out.stderr:
    sys.exit("a manifest does not validate against the Kubernetes API schemas")
PY
