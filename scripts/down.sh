#!/usr/bin/env bash
# Stops what scripts/up.sh started (and only that): platform processes, then any
# project-local Pebble, pebble-challtestsrv, Temporal, Redis and PostgreSQL. Those it merely
# reused keep running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stop_started agent-smoke agent-domain worker relay api pebble challtestsrv temporal redis postgres
say "stopped"
