#!/bin/sh
# The `jobs` service of docker-compose.yml: defines the example jobs of
# examples/jobs.yaml through a coordinator's admin API ($CRONFLEET_SERVER), leaving jobs
# that already exist as they are, so `docker compose up` may run it again.
#
# The same jobs as examples/jobs.yaml, flag for field (scripts/validate-deploy checks
# that they come out identical), except that sync-inventory polls a coordinator's health
# endpoint ($SYNC_INVENTORY_URL) rather than the worker's own loopback. When the CLI
# gains a declarative `cronfleet apply -f FILE`, this becomes that one command.
set -eu

: "${CRONFLEET_SERVER:?the coordinator API, e.g. http://coordinator-1:50051}"
SYNC_INVENTORY_URL="${SYNC_INVENTORY_URL:-http://coordinator-1:8080/healthz}"

# docker compose starts us once coordinator-1 is healthy; allow for a slow start anyway.
tries=0
until cronfleet job list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "the coordinator API at $CRONFLEET_SERVER does not answer" >&2
    exit 1
  fi
  sleep 1
done

# create NAME FLAGS…: `cronfleet job create` unless the job exists.
create() {
  name=$1
  shift
  if cronfleet job get "$name" >/dev/null 2>&1; then
    echo "job $name exists; left as it is"
  else
    cronfleet job create "$name" "$@" >/dev/null
    echo "job $name created"
  fi
}

create heartbeat --handler noop --every 10s

# The single quotes are deliberate: $CRONFLEET_* expand when the job runs, not here.
# shellcheck disable=SC2016
create payment-reminders --handler shell --cron '0 9 * * 1-5' --tz America/New_York \
  --args '{"script": "echo \"sending payment reminders for the $CRONFLEET_SLOT slot\""}' \
  --retries 3 --timeout 10m

# shellcheck disable=SC2016
create nightly-report --handler shell --cron '30 2 * * *' --tz Europe/Berlin \
  --args '{"script": "echo \"report for $(date -u +%F)\"\necho \"run $CRONFLEET_RUN_ID, attempt $CRONFLEET_ATTEMPT\"\n"}' \
  --timeout 30m --catch-up one

create stock-forecast --handler sleep --every 1m --args '{"ms": 1500}' \
  --overlap skip --priority 10

create sync-inventory --handler http --every 5m \
  --args "{\"url\": \"$SYNC_INVENTORY_URL\", \"expect_status\": 200}"
