#!/usr/bin/env bash
# Stops what scripts/up.sh started (and only that): platform processes, then any
# project-local Temporal, Redis and PostgreSQL. Stores it merely reused keep running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stop_started agent-smoke worker relay api temporal redis postgres
say "stopped"
