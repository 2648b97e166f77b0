#!/bin/bash
# runsvc.sh -- what the runner's service runs (LAB STAND-IN): the listener, in
# the runner's directory. `svc.sh install` copies it beside run.sh.
cd "$(dirname "$0")" || exit 1
exec ./bin/Runner.Listener run --startuptype service
