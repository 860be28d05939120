#!/bin/bash
# Start a single-node KRaft Kafka: write server.properties from KAFKA_* variables over
# single-node defaults, format the data directory on first start, exec the broker.
#
# KAFKA_* -> property as the apache/kafka image does: drop the prefix, lower-case, `___` -> `-`,
# `__` -> `_`, `_` -> `.`. Not properties: KAFKA_HEAP_OPTS (JVM heap, default 1 GiB) and
# KAFKA_JVM_OPTS (extra JVM options). CLUSTER_ID names the cluster on first format (random if
# unset).
#
# AION_KAFKA_WAIT_FOR=FILE: wait until FILE exists and source it before starting — how a test
# kit sets the advertised listener to a host port that is only known once the container runs
# (testcontainers' own Kafka module does the same).
set -euo pipefail

if [ -n "${AION_KAFKA_WAIT_FOR:-}" ]; then
  while [ ! -f "${AION_KAFKA_WAIT_FOR}" ]; do sleep 0.1; done
  # shellcheck disable=SC1090
  . "${AION_KAFKA_WAIT_FOR}"
fi

declare -A props=(
  [process.roles]="broker,controller"
  [node.id]="1"
  [listeners]="PLAINTEXT://:9092,CONTROLLER://:9093"
  [advertised.listeners]="PLAINTEXT://localhost:9092"
  [controller.listener.names]="CONTROLLER"
  [controller.quorum.voters]="1@localhost:9093"
  [listener.security.protocol.map]="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  [log.dirs]="/var/lib/kafka/data"
  [num.partitions]="1"
  [default.replication.factor]="1"
  [min.insync.replicas]="1"
  [offsets.topic.replication.factor]="1"
  [transaction.state.log.replication.factor]="1"
  [transaction.state.log.min.isr]="1"
  [share.coordinator.state.topic.replication.factor]="1"
  [share.coordinator.state.topic.min.isr]="1"
  [group.initial.rebalance.delay.ms]="0"
  [auto.create.topics.enable]="false"
  [message.max.bytes]="8388608"
)
for name in $(compgen -e | grep '^KAFKA_' || true); do
  case "${name}" in KAFKA_HEAP_OPTS | KAFKA_JVM_OPTS) continue ;; esac
  key="${name#KAFKA_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  props["${key}"]="${!name}"
done

config=/opt/kafka/config/server.properties
: >"${config}"
for key in "${!props[@]}"; do printf '%s=%s\n' "${key}" "${props[${key}]}" >>"${config}"; done

# kafka-server-start.sh's JVM options (decision 24 in aion's docs/decisions.md explains why).
# shellcheck disable=SC2206
java=(java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15
  -Djava.awt.headless=true -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties
  ${KAFKA_JVM_OPTS:-} -cp '/opt/kafka/libs/*')

log_dir="${props[log.dirs]%%,*}"
if [ ! -f "${log_dir}/meta.properties" ]; then
  cluster_id="${CLUSTER_ID:-$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')}"
  "${java[@]}" kafka.tools.StorageTool format "--cluster-id=${cluster_id}" -c "${config}"
fi
exec "${java[@]}" kafka.Kafka "${config}"
