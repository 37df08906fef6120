#!/usr/bin/env bash
# Validates config/kubernetes/*.yaml offline against the Kubernetes API schema (strict:
# unknown fields are errors) for the versions tokend supports as a native sidecar, and
# checks the tokend.toml embedded in each ConfigMap with `tokend check`, with the secret
# files the pod mounts stood in for (through TOKEND_ overrides, as check reads them),
# etcd's CA and password files included, and the service account of the Kubernetes
# backend.
# Usage: kubernetes.sh TOOLS_VENV [TOKEND_BINARY]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=$1
bin=${2:-$repo/target/debug/tokend}
for version in 1.29.0 1.33.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$repo"/config/kubernetes/*.yaml
    echo "kubernetes $version: manifests valid"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - "$work" "$repo"/config/kubernetes/*.yaml <<'PY'
import pathlib, sys, tomllib, yaml
out = pathlib.Path(sys.argv[1])
n = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap" and "tokend.toml" in doc.get("data", {}):
            n += 1
            text = doc["data"]["tokend.toml"]
            (out / f"{n}.toml").write_text(text)
            # The secret files come from a mounted Secret in the pod: stand-ins here.
            env = []
            for name, cred in tomllib.loads(text).get("credentials", {}).items():
                for key in ("client_secret_file", "refresh_token_file"):
                    if key in cred:
                        stand_in = out / f"{n}.{name}.{key}"
                        stand_in.write_text("stand-in-for-the-mounted-secret\n")
                        env.append(f"TOKEND_CREDENTIALS__{name.upper()}__{key.upper()}={stand_in}")
            etcd = tomllib.loads(text).get("coordination", {}).get("etcd", {})
            for key in ("ca_file", "cert_file", "key_file", "password_file"):
                if key in etcd:
                    stand_in = out / f"{n}.etcd.{key}"
                    stand_in.write_text("stand-in-for-the-mounted-secret\n")
                    env.append(f"TOKEND_COORDINATION__ETCD__{key.upper()}={stand_in}")
            if tomllib.loads(text).get("coordination", {}).get("backend") == "kubernetes":
                # In a pod these come from the service account and the kubelet.
                env += ["KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
                        "TOKEND_COORDINATION__KUBERNETES__NAMESPACE=my-app"]
                for key in ("token_file", "ca_file"):
                    stand_in = out / f"{n}.kubernetes.{key}"
                    stand_in.write_text("stand-in-for-the-service-account\n")
                    env.append(f"TOKEND_COORDINATION__KUBERNETES__{key.upper()}={stand_in}")
            (out / f"{n}.env").write_text("\n".join(env) + "\n")
if n == 0:
    sys.exit("no ConfigMap with a tokend.toml found")
PY
for f in "$work"/*.toml; do
    mapfile -t stand_ins < "${f%.toml}.env"
    env "${stand_ins[@]}" "$bin" check -c "$f" > /dev/null
    echo "embedded tokend.toml: valid"
done
echo "kubernetes manifests: 1 passed, 0 failed"
