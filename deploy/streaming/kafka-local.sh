#!/usr/bin/env bash
# Start one Apache Kafka node (KRaft: broker + controller, no ZooKeeper) on 127.0.0.1, in the foreground.
#
#   deploy/streaming/kafka-local.sh [--port 9092] [--controller-port 9093] [--dir DIR] [--libs .tools/kafka/libs]
#
# DIR (default: a new temp dir) receives server.properties, the formatted log dirs and nothing else; a DIR that
# is already formatted is reused (restart keeps the topics). The broker's log goes to stdout. Stop it with
# SIGTERM (a clean shutdown takes ~1-2 s). Needs Java 17+ and the jars from `make kafka-jars`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port=9092
controller_port=9093
dir=""
libs="$repo/.tools/kafka/libs"
heap="${KAFKA_HEAP:-512m}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --controller-port) controller_port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --libs) libs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "kafka-local.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! compgen -G "$libs/kafka_*.jar" >/dev/null; then
  echo "kafka-local.sh: no Kafka jars in $libs; run 'make kafka-jars' first" >&2
  exit 3
fi
[[ -n "$dir" ]] || dir="$(mktemp -d -t seqwatch-kafka.XXXXXX)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${controller_port}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${dir}/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS

java_opts=(-Xms128m "-Xmx${heap}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties")
cp="$libs/*"
if [[ ! -f "$dir/data/meta.properties" ]]; then
  # A cluster id is 16 random bytes in URL-safe base64 without padding; Kafka avoids a leading '-'.
  cluster_id=""
  while [[ -z "$cluster_id" || "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
    -t "$cluster_id" -c "$dir/server.properties"
fi
exec java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties"
