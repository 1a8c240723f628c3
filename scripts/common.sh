# Shared by the test scripts (sourced, not run).

# ffmpeg from apt where it is missing (decoding and MP3 encoding need it).
ensure_ffmpeg() {
    command -v ffmpeg >/dev/null 2>&1 && return
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ffmpeg >/dev/null
}

# pytest with the venv $1 first on PATH (the Cog runtime starts its worker as the `python` found there);
# the rest are pytest's arguments. Returns pytest's status, saying so when it collected no tests.
run_pytest() {
    local venv="$1"
    shift
    local status=0
    PATH="$venv/bin:$PATH" python -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "pytest collected no tests" >&2
    fi
    return "$status"
}
