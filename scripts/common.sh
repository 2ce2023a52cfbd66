# Shared by scripts/test, scripts/dev and scripts/bench: what a fresh Debian machine with
# only the Rust toolchain lacks.

# ensure_packages PACKAGE:CHECK … — installs the Debian PACKAGE when CHECK (a shell test of
# the exact file or command the suite uses) fails.
ensure_packages() {
  local missing=() spec package check
  for spec in "$@"; do
    package=${spec%%:*}
    check=${spec#*:}
    eval "$check" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf '\n==> installing %s\n' "${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# use_vendored_protoc — etcd-client's build script compiles etcd's .proto files with protoc
# and needs protobuf's well-known includes (google/protobuf/descriptor.proto). Both come
# from a registry package (crates/protoc), never from the machine: PROTOC and
# PROTOC_INCLUDE are exported pointing at it, whatever was set or installed before. Then
# etcd-client's own .proto files are compiled with exactly that compiler and include
# directory in an empty environment, so a missing input fails here, in one line, before
# the long build rather than inside it.
use_vendored_protoc() {
  printf '\n==> protoc from the protoc-bin-vendored package\n'
  eval "$(cargo run --locked -q -p cronfleet-protoc)"
  local etcd_client
  etcd_client=$(cargo metadata --locked --format-version 1 | python3 -c '
import json, os, sys
packages = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in packages if p["name"] == "etcd-client"))')
  local files
  files=$(sed -n 's|^ *"proto/\(.*\.proto\)",$|\1|p' "$etcd_client/build.rs")
  [ -n "$files" ] || { echo "no .proto files found in $etcd_client/build.rs" >&2; return 1; }
  # shellcheck disable=SC2086 # one word per file
  cargo run --locked -q -p cronfleet-protoc -- --check "$etcd_client/proto" $files
}
