#!/usr/bin/env bash
# Builds the splitway Lambda layer zip from the release binary:
#   extensions/splitway      the binary; Lambda starts every file of /opt/extensions/ as an
#                            external extension, and splitway registers under this file name
#   splitway/splitway.toml   the config, read from /opt/splitway/splitway.toml
#
# Usage: deploy/lambda/build-layer.sh [CONFIG [OUT.zip]]
#   CONFIG   default deploy/lambda/splitway.toml
#   OUT.zip  default target/lambda/splitway-layer.zip (what template.yaml's ContentUri names)
# SPLITWAY_BIN=PATH packs a binary built elsewhere (e.g. for arm64, or on Amazon Linux 2023 for
# its glibc) instead of running `cargo build --release --locked --bin splitway` here.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
config="${1:-$root/deploy/lambda/splitway.toml}"
out="${2:-$root/target/lambda/splitway-layer.zip}"

command -v zip >/dev/null || { echo "build-layer.sh: needs zip (apt-get install zip)" >&2; exit 1; }
[ -f "$config" ] || { echo "build-layer.sh: no config file at $config" >&2; exit 1; }

bin="${SPLITWAY_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin splitway)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/splitway"
fi
[ -x "$bin" ] || { echo "build-layer.sh: $bin is not an executable splitway binary" >&2; exit 1; }

# The layer's config must load: check it with the binary itself when it runs on this machine
# (a cross-built binary may not; then say so instead of packing an unchecked config silently).
if "$bin" --version >/dev/null 2>&1; then
  "$bin" check --config "$config" >/dev/null
else
  echo "build-layer.sh: warning: cannot run $bin here; run \`splitway check --config $config\` where it runs" >&2
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/extensions" "$stage/splitway"
install -m 0755 "$bin" "$stage/extensions/splitway"
install -m 0644 "$config" "$stage/splitway/splitway.toml"

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out"
# -X: no extra file attributes, so the same inputs give the same zip.
(cd "$stage" && zip -q -X -r "$out" extensions splitway)
echo "$out"
