# Shared by scripts/test and scripts/dev: install the Debian packages a command needs when
# they are missing (a fresh machine has only the Rust toolchain), and point the etcd
# client's build at protoc.

# ensure_packages PACKAGE:CHECK … — installs PACKAGE when CHECK (a shell test) fails.
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
  # etcd-client's build script compiles etcd's .proto files with protoc.
  PROTOC="${PROTOC:-$(command -v protoc)}"
  export PROTOC
}
