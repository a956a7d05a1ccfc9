#!/usr/bin/env bash
# Start the Google Cloud Pub/Sub emulator on 127.0.0.1:PORT in the foreground (state in memory only).
#
#   deploy/streaming/pubsub-emulator.sh [--port 8085]
#
# Clients find it through PUBSUB_EMULATOR_HOST=127.0.0.1:PORT (google-cloud-pubsub and Beam both honour it).
# The emulator is the Debian package google-cloud-cli-pubsub-emulator (`make pubsub-emulator` checks it);
# PUBSUB_EMULATOR_DIR overrides where it is looked for.
set -euo pipefail
port=8085
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "pubsub-emulator.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
emulator_dir="${PUBSUB_EMULATOR_DIR:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator}"
launcher="$emulator_dir/bin/cloud-pubsub-emulator"
if [[ ! -x "$launcher" ]]; then
  echo "pubsub-emulator.sh: $launcher not found; run 'make pubsub-emulator' (apt-get install" \
       "google-cloud-cli-pubsub-emulator)" >&2
  exit 3
fi
export JAVA_OPTS="${JAVA_OPTS:--Xms64m -Xmx256m}"
exec "$launcher" --host=127.0.0.1 --port="$port"
