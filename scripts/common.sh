# Shared by the test scripts (sourced, not run).

# ffmpeg from apt where it is missing (decoding and MP3 encoding need it).
ensure_ffmpeg() {
    command -v ffmpeg >/dev/null 2>&1 && return
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ffmpeg >/dev/null
}

# pytest with the venv $1 first on PATH (the Cog runtime starts its worker as the `python` found there),
# one worker per core up to 4 (pytest-xdist; `-n 0` among the arguments runs in this process); the rest are
# pytest's arguments. Returns pytest's status, saying so when it collected no tests.
run_pytest() {
    local venv="$1"
    shift
    local status=0
    PATH="$venv/bin:$PATH" python -m pytest -n auto --maxprocesses 4 "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "pytest collected no tests" >&2
    fi
    return "$status"
}

# Node.js and npm from apt where they are missing (the Worker example in examples/worker needs them).
ensure_node() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && return
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
}

# The Worker example: install from its lockfile, type-check, build and run its tests in workerd.
# Runs before pytest: tests/test_worker_e2e.py serves the built Worker.
run_worker_tests() {
    (
        cd examples/worker
        npm ci --no-audit --no-fund --loglevel=error
        npm run --silent check
        npm test
    )
}
