# Set-up shared by scripts/demo and scripts/test. Source it with the pip extras to
# install: `source scripts/setup.sh all` or `source scripts/setup.sh all,test`.
# Idempotent and quick when nothing changed; works on a fresh Debian/Ubuntu machine
# (installs the system packages napari needs when there is no display, as root or
# with sudo). Override with PYTHON=python3.12, VENV=/path, TORCH_SPEC=torch==2.x.
set -euo pipefail

EXTRAS="${1:-all}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
# A CPU build of this release is cached on the project's machines; elsewhere pip fetches it.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else say "need root to run: $*"; return 1
    fi
}

apt_install() {  # install the Debian packages in "$@" that are missing
    command -v apt-get >/dev/null || { say "not a Debian/Ubuntu system: install $* yourself"; return 0; }
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# napari draws with OpenGL; without a display we render under Xvfb with Mesa.
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ "$(uname -s)" = Linux ]; then
    apt_install xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
        libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
        libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    say "napari-brainage needs Python 3.10 or newer ($PYTHON is $("$PYTHON" --version 2>&1))"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian/Ubuntu ship venv separately from python3.
        rm -rf "$VENV"
        apt_install "python3-venv" "python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv" || true
        "$PYTHON" -m venv "$VENV"
    fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    say "installing $TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC"
fi

# Reinstall the package only when its requirements changed (pyproject.toml or extras).
stamp="$VENV/.napari-brainage-$EXTRAS"
wanted="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing napari-brainage[$EXTRAS] (editable)"
    "${PIP[@]}" install -e "$ROOT[$EXTRAS]"
    echo "$wanted" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
