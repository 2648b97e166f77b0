#!/bin/bash
# run.sh -- LAB STAND-IN of the GitHub Actions runner's run.sh: runs the
# listener in the foreground (what the service runs through runsvc.sh).
cd "$(dirname "$0")" || exit 1
exec ./bin/Runner.Listener run "$@"
