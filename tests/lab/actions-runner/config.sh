#!/bin/bash
# config.sh -- LAB STAND-IN of the GitHub Actions runner's config.sh.
# Like the real one: refuses to run as root (unless RUNNER_ALLOW_RUNASROOT is
# set), then hands every argument to the listener's `configure` (or `remove`).
# Options may come from the command line or from ACTIONS_RUNNER_INPUT_<NAME>
# environment variables (the real runner's CommandSettings): the token never
# needs to be on a command line.
user_id=$(id -u)
if [ "$user_id" -eq 0 ] && [ -z "$RUNNER_ALLOW_RUNASROOT" ]; then
    echo "Must not run with sudo"
    exit 1
fi
cd "$(dirname "$0")" || exit 1
if [ "$1" = remove ]; then
    shift
    exec ./bin/Runner.Listener remove "$@"
fi
exec ./bin/Runner.Listener configure "$@"
