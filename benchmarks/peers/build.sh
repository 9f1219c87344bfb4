#!/usr/bin/env bash
# Build the non-Python peer publishers into benchmarks/peers/bin/:
#   bin/go-peer    Go, github.com/rabbitmq/amqp091-go, built offline from Debian's packages
#                  (golang-go + golang-github-rabbitmq-amqp091-go-dev) in GOPATH mode
#   bin/node-peer  launcher for node/publish.js (amqplib pinned in node/package.json)
# Installs what is missing (apt-get for Go and Node, npm for amqplib). Idempotent: a second
# run installs nothing and only rebuilds. Exits non-zero with a message when it cannot build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gopath=/usr/share/gocode
amqp091="$gopath/src/github.com/rabbitmq/amqp091-go"

die() { echo "build.sh: $*" >&2; exit 1; }
trap 'die "failed at line $LINENO (see the output above)"' ERR

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*"
    echo "build.sh: apt-get install $*" >&2
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

# --- Go peer -------------------------------------------------------------------------------
missing=()
command -v go >/dev/null || missing+=(golang-go)
[ -f "$amqp091/channel.go" ] || missing+=(golang-github-rabbitmq-amqp091-go-dev)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
command -v go >/dev/null || die "no go on PATH after installing golang-go"
[ -f "$amqp091/channel.go" ] || die "amqp091-go sources not found under $amqp091"

mkdir -p "$here/bin"
# GOPATH mode: the import resolves to Debian's copy of the library, nothing is downloaded.
(cd "$here/go" && GO111MODULE=off GOPATH="$gopath" GOPROXY=off \
    GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/go-build}" \
    go build -o "$here/bin/go-peer" .) || die "go build failed"
echo "build.sh: built bin/go-peer ($(go version | cut -d' ' -f3))" >&2

# --- Node peer -----------------------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' \
    || die "node >= 18 needed for amqplib, found $(node --version)"
want="$(node -p 'require(process.argv[1]).dependencies.amqplib' "$here/node/package.json")"
have="$(node -p 'try { require(process.argv[1]).version } catch { "" }' \
    "$here/node/node_modules/amqplib/package.json")"
if [ "$have" != "$want" ]; then
    (cd "$here/node" && npm install --no-audit --no-fund --loglevel=error >&2) \
        || die "npm install of amqplib@$want failed"
fi
cat > "$here/bin/node-peer" <<'SH'
#!/bin/sh
exec node "$(dirname "$0")/../node/publish.js" "$@"
SH
chmod +x "$here/bin/node-peer"
echo "build.sh: node peer ready (amqplib $want, node $(node --version))" >&2
