#!/usr/bin/env bash
# Builds the reference agent image (orchestrator-agent:latest by default).
#
# The binary is linked statically against glibc (no musl target is needed)
# and placed on a `FROM scratch` base, so no registry is involved. Running it
# again with nothing changed rebuilds nothing and yields the same image id.
#
# Usage: scripts/build-agent-image.sh [--check]
#   --check   also run the image: /health must answer and `docker stop`
#             must end it with exit code 0 in under a second.
# Environment:
#   AGENT_IMAGE   image tag to build (default orchestrator-agent:latest)
set -euo pipefail

image="${AGENT_IMAGE:-orchestrator-agent:latest}"
target="x86_64-unknown-linux-gnu"
check=false
for arg in "$@"; do
    case "$arg" in
        --check) check=true ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-agent-image: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# --target keeps RUSTFLAGS away from build scripts and proc macros, which
# must stay dynamically linked to run on the host.
echo "build-agent-image: building reference-agent (release, static, $target)" >&2
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p reference-agent --target "$target"

binary="$root/target/$target/release/reference-agent"
# A dynamic binary would fail inside the empty image with a bare "no such
# file or directory"; refuse it here with a clear message instead.
if readelf -l "$binary" | grep -q 'INTERP' || readelf -d "$binary" | grep -q '(NEEDED)'; then
    echo "build-agent-image: $binary is not statically linked" >&2
    exit 1
fi
version="$("$binary" --version | awk '{print $2}')"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/reference-agent"
# Debug sections are useless in the image and half its size; symbols stay
# so a panic backtrace still names functions.
strip --strip-debug "$context/reference-agent"
cp "$root/agents/Dockerfile" "$context/Dockerfile"

# The classic builder talks to the Engine API directly and needs neither
# BuildKit nor buildx.
# Its deprecation notice is noise on success, so output is shown only on
# failure.
if ! build_log="$(DOCKER_BUILDKIT=0 docker build --build-arg "VERSION=$version" \
    --tag "$image" "$context" 2>&1)"; then
    echo "$build_log" >&2
    echo "build-agent-image: docker build failed" >&2
    exit 1
fi

read -r id size < <(docker image inspect --format '{{.Id}} {{.Size}}' "$image")
echo "image: $image"
echo "id:    $id"
echo "size:  $size bytes ($(( (size + 1023) / 1024 )) KiB)"

if ! $check; then
    exit 0
fi

name="build-agent-image-check-$$"
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$context"
}
trap cleanup EXIT
docker run -d --name "$name" -e ORCH_LISTEN_PORTS=8080 -e ORCH_AGENT=check \
    -p 127.0.0.1::8080 "$image" >/dev/null
port="$(docker port "$name" 8080/tcp | head -n1 | sed 's/.*://')"
healthy=false
for _ in $(seq 1 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" = 200 ]; then
        healthy=true
        break
    fi
    sleep 0.1
done
if ! $healthy; then
    echo "check: /health did not answer 200 within 10s" >&2
    docker logs "$name" >&2 || true
    exit 1
fi
echo "check: /health answered 200 on 127.0.0.1:$port"
start_ns="$(date +%s%N)"
docker stop --time 10 "$name" >/dev/null
stop_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
code="$(docker inspect --format '{{.State.ExitCode}}' "$name")"
echo "check: docker stop took ${stop_ms} ms, exit code $code"
if [ "$code" != 0 ] || [ "$stop_ms" -ge 1000 ]; then
    echo "check: expected exit code 0 within 1000 ms" >&2
    docker logs "$name" >&2 || true
    exit 1
fi
