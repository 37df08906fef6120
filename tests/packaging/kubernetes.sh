#!/usr/bin/env bash
# Validates config/kubernetes/*.yaml offline against the Kubernetes API schema (strict:
# unknown fields are errors) for the versions tokend supports as a native sidecar, and
# checks the tokend.toml embedded in each ConfigMap with `tokend check`.
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
import pathlib, sys, yaml
out = pathlib.Path(sys.argv[1])
n = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap" and "tokend.toml" in doc.get("data", {}):
            n += 1
            (out / f"{n}.toml").write_text(doc["data"]["tokend.toml"])
if n == 0:
    sys.exit("no ConfigMap with a tokend.toml found")
PY
for f in "$work"/*.toml; do
    "$bin" check -c "$f" > /dev/null
    echo "embedded tokend.toml: valid"
done
echo "kubernetes manifests: 1 passed, 0 failed"
