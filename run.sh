#!/usr/bin/env bash
# One entry point for set-up and the two jobs (see README.md):
#   bash run.sh main   # set up, train the default agent, export its scheduler, evaluate it
#   bash run.sh test   # set up, run the test suite
# Set-up is idempotent: a venv in .venv (or $RLOPT_VENV), torch first (a bare `torch` requirement
# would pull a multi-GB CUDA build on machines without torch), then this project with its dev
# extra.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${RLOPT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${RLOPT_TORCH_SPEC:-torch==2.13.0}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local py="$VENV/bin/python"
    # reinstall only when the requirements changed: a stamp of pyproject.toml and the torch spec
    local stamp="$VENV/.rlopt-installed"
    local want
    want="$(cat pyproject.toml; echo "$TORCH_SPEC")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import rlopt, envs, agents" 2>/dev/null; then
        return
    fi
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "$TORCH_SPEC"
    "$py" -m pip install --quiet -e ".[dev]"
    printf '%s' "$want" > "$stamp"
}

job="${1:-}"
shift || true
case "$job" in
    main)
        setup
        out="${RLOPT_OUT:-runs/default}"
        resume=()
        # a second run continues (or just re-exports) the first instead of refusing to overwrite it
        if compgen -G "$out/checkpoints/dqn_*_steps.zip" > /dev/null; then resume=(--resume); fi
        "$VENV/bin/python" train_agent.py --out "$out" "${resume[@]}" "$@"
        "$VENV/bin/python" evaluate.py --policy "$out/policy.rlopt" --workers 2 --out "$out/eval"
        ;;
    test)
        setup
        "$VENV/bin/python" -m pytest -q "$@"
        ;;
    *)
        echo "usage: bash run.sh main|test [extra arguments]" >&2
        exit 2
        ;;
esac
