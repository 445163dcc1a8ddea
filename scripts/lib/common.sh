# Shared shell helpers for scripts/test, scripts/demo and scripts/bench. Source it; it sets no
# options of its own. Everything here is idempotent: it checks before it changes the machine.

AISHELL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
AISHELL_TEST_USER=${AISHELL_TEST_USER:-aishell-test}
AISHELL_CI_PREFIX=${AISHELL_CI_PREFIX:-/opt/aishell-ci}

# Build dependencies (Debian bookworm package names).
AISHELL_BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libarchive-dev libseccomp-dev libcap-dev
  zlib1g-dev libzstd-dev libisal-dev catch2 libcli11-dev pigz ccache
)
# Tools the tests drive or check against (independent implementations of the same formats).
AISHELL_TEST_PACKAGES=(
  docker-registry skopeo umoci oci-image-tool busybox-static apache2-utils uidmap util-linux
  python3 python3-pytest python3-jwt python3-cryptography sudo tmux openssl
  golang-github-docker-docker-dev debootstrap docker.io podman time
)
# What scripts/fuzz needs beyond the build: clang, libFuzzer and llvm-symbolizer.
AISHELL_FUZZ_PACKAGES=(clang libclang-rt-dev llvm)
# What scripts/demo needs beyond the build: a registry and the tools that make its image.
AISHELL_DEMO_PACKAGES=(docker-registry skopeo umoci busybox-static python3)

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
  _c_bold=$'\e[1m' _c_red=$'\e[31m' _c_green=$'\e[32m' _c_off=$'\e[0m'
else
  _c_bold='' _c_red='' _c_green='' _c_off=''
fi

log()  { printf '%s==> %s%s\n' "$_c_bold" "$*" "$_c_off"; }
warn() { printf '%swarning:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as root: directly when we are root, else through sudo without a prompt.
as_root() {
  if is_root; then "$@"; else sudo -n "$@"; fi
}

# Print the packages from the arguments that are not installed.
missing_packages() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || printf '%s\n' "$pkg"
  done
}

# Install the missing ones with apt-get (as root), or name them and fail.
ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages "$@")
  ((${#missing[@]} == 0)) && return 0
  if ! is_root && ! sudo -n true 2>/dev/null; then
    die "missing packages: ${missing[*]}
  install them with: sudo apt-get install -y ${missing[*]}"
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The unprivileged user the tests switch to, with a subordinate id range for newuidmap.
ensure_test_user() {
  local user=$AISHELL_TEST_USER
  if ! id "$user" >/dev/null 2>&1; then
    log "creating unprivileged user $user"
    as_root useradd --create-home --shell /bin/bash "$user"
  fi
  local f
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$user:" "$f" 2>/dev/null; then
      echo "$user:200000:65536" | as_root tee -a "$f" >/dev/null
    fi
  done
}

# Configure and build one build dir. Usage: build_tree DIR BUILD_TYPE [cmake args...]
build_tree() {
  local dir=$1 type=$2
  shift 2
  # ccache makes a rebuild on a machine that built this tree before (a developer's, or CI on the
  # session's machine) cheap; on a new machine it only fills the cache.
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    # Paths relative to the checkout, and no cwd in the hash, so another clone hits too.
    export CCACHE_BASEDIR=$AISHELL_ROOT CCACHE_NOHASHDIR=true
  fi
  cmake -S "$AISHELL_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "${launcher[@]}" "$@" >/dev/null
  ninja -C "$dir" -j"$(nproc)"
}

# Seconds since the epoch with fractions, for step timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
