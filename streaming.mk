# Streaming infrastructure (issue 7): a locally built Prism runner, Apache Kafka's own jars for a one-node
# KRaft broker, and a check of the Pub/Sub emulator. Included from the main Makefile. Every target is idempotent
# (a second run does nothing) and writes only under .tools/ (git-ignored).
#
#   make streaming-tools   all of the below: what tests/streaming needs (`make test` runs it first)
#   make prism             .tools/bin/prism: Beam's Prism runner built from the Beam Go module of the same
#                          version as the apache-beam pin in requirements.lock (go install; ~3 min, 63 MB)
#   make kafka-jars        .tools/kafka/libs: Apache Kafka $(KAFKA_VERSION) (broker, KRaft, storage tool) from
#                          Maven Central (mvn dependency:copy-dependencies; ~30 s, 44 MB)
#   make pubsub-emulator   checks the Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator)
#   make mosquitto         checks for (or, as root, installs) Debian's mosquitto MQTT broker
#   make flink-job-server  .tools/flink/beam-flink-job-server.jar: Beam's Flink job server (Beam 2.50, Flink
#                          1.16; see deploy/flink/pom.xml for why those versions) from Maven Central, for
#                          --runner=FlinkRunner --flink_job_server_jar=... (~1.5 min, 150 MB)
#   make spark-job-server  .tools/spark/beam-spark-job-server.jar: Beam's Spark job server (Beam 2.50, Spark
#                          3.2.2; see deploy/spark/pom.xml) from Maven Central, for --runner=SparkRunner
#                          --spark_job_server_jar=... (188 MB)
#   make streaming-clean   removes .tools/
#
# Start the brokers by hand with deploy/streaming/kafka-local.sh and deploy/streaming/pubsub-emulator.sh.
# Run a pipeline on Prism with --runner=PrismRunner --prism_location=.tools/bin/prism --streaming.

TOOLS_DIR ?= .tools
BEAM_VERSION := $(shell sed -n 's/^apache-beam==//p' requirements.lock)
KAFKA_VERSION ?= 4.1.1
MVN ?= mvn
GO ?= go
PUBSUB_EMULATOR_DIR ?= /usr/lib/google-cloud-sdk/platform/pubsub-emulator

PRISM_STAMP := $(TOOLS_DIR)/bin/.prism-v$(BEAM_VERSION)
KAFKA_STAMP := $(TOOLS_DIR)/kafka/.kafka-$(KAFKA_VERSION)
KAFKA_POM := deploy/streaming/kafka/pom.xml
FLINK_POM := deploy/flink/pom.xml
FLINK_JAR := $(TOOLS_DIR)/flink/beam-flink-job-server.jar
SPARK_POM := deploy/spark/pom.xml
SPARK_JAR := $(TOOLS_DIR)/spark/beam-spark-job-server.jar
LAUNCHER_JAR := deploy/job_server_jar.py

.PHONY: streaming-tools prism kafka-jars pubsub-emulator mosquitto flink-job-server spark-job-server streaming-clean

streaming-tools: prism kafka-jars pubsub-emulator mosquitto flink-job-server spark-job-server

prism: $(PRISM_STAMP)

# One stamp per Beam version: a new apache-beam pin rebuilds Prism to match (the job API must agree).
$(PRISM_STAMP):
	@test -n "$(BEAM_VERSION)" || { echo "streaming.mk: no apache-beam==X pin in requirements.lock" >&2; exit 1; }
	@command -v $(GO) >/dev/null || { echo "streaming.mk: Go is needed to build Prism (apt-get install golang," \
	  "or https://go.dev/dl); Beam's own download of Prism needs GitHub" >&2; exit 1; }
	@mkdir -p $(TOOLS_DIR)/bin
	@echo "building Prism v$(BEAM_VERSION) into $(TOOLS_DIR)/bin (a few minutes on 2 cores)"
	GOBIN=$(abspath $(TOOLS_DIR)/bin) GOFLAGS=-buildvcs=false \
	  $(GO) install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)
	@rm -f $(TOOLS_DIR)/bin/.prism-v*
	@touch $@

kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): $(KAFKA_POM)
	@command -v java >/dev/null && command -v $(MVN) >/dev/null || { echo "streaming.mk: Java 17+ and Maven" \
	  "are needed for Kafka (apt-get install openjdk-17-jdk-headless maven)" >&2; exit 1; }
	@rm -rf $(TOOLS_DIR)/kafka && mkdir -p $(TOOLS_DIR)/kafka
	$(MVN) -B -q -f $(KAFKA_POM) -Dkafka.version=$(KAFKA_VERSION) dependency:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(abspath $(TOOLS_DIR)/kafka/libs)
	@touch $@

flink-job-server: $(FLINK_JAR)

$(FLINK_JAR): $(FLINK_POM) $(LAUNCHER_JAR)
	@command -v java >/dev/null && command -v $(MVN) >/dev/null || { echo "streaming.mk: Java 17+ and Maven" \
	  "are needed for the Flink job server (apt-get install openjdk-17-jdk-headless maven)" >&2; exit 1; }
	@rm -rf $(TOOLS_DIR)/flink && mkdir -p $(TOOLS_DIR)/flink
	$(MVN) -B -q -f $(FLINK_POM) dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(abspath $(TOOLS_DIR)/flink/libs)
	$(PYTHON) $(LAUNCHER_JAR) flink $@ $(TOOLS_DIR)/flink/libs

spark-job-server: $(SPARK_JAR)

$(SPARK_JAR): $(SPARK_POM) $(LAUNCHER_JAR)
	@command -v java >/dev/null && command -v $(MVN) >/dev/null || { echo "streaming.mk: Java 17+ and Maven" \
	  "are needed for the Spark job server (apt-get install openjdk-17-jdk-headless maven)" >&2; exit 1; }
	@rm -rf $(TOOLS_DIR)/spark && mkdir -p $(TOOLS_DIR)/spark
	$(MVN) -B -q -f $(SPARK_POM) dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(abspath $(TOOLS_DIR)/spark/libs)
	$(PYTHON) $(LAUNCHER_JAR) spark $@ $(TOOLS_DIR)/spark/libs

# The emulator comes with the machine image (Google's apt repository is not reachable here, so apt-get cannot
# install it); tests/streaming skips the Pub/Sub tests, saying so, where it is missing.
pubsub-emulator:
	@if [ -x "$(PUBSUB_EMULATOR_DIR)/bin/cloud-pubsub-emulator" ]; then \
	  echo "Pub/Sub emulator: $(PUBSUB_EMULATOR_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && apt-get install -y -q google-cloud-cli-pubsub-emulator >/dev/null 2>&1; then \
	  echo "Pub/Sub emulator installed with apt-get"; \
	else \
	  echo "streaming.mk: the Pub/Sub emulator is not installed and apt-get cannot install it" \
	    "(google-cloud-cli-pubsub-emulator is in Google's apt repository); the Pub/Sub tests will skip" >&2; \
	fi

# The MQTT tests start their own broker from Debian's package; they skip, saying so, where it is missing.
mosquitto:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then \
	  echo "mosquitto: $$(command -v mosquitto || echo /usr/sbin/mosquitto)"; \
	elif [ "$$(id -u)" = 0 ] && { apt-get install -y -q mosquitto >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mosquitto >/dev/null 2>&1; }; }; then \
	  systemctl disable --now mosquitto >/dev/null 2>&1 || true; \
	  echo "mosquitto installed with apt-get"; \
	else \
	  echo "streaming.mk: mosquitto is not installed and apt-get cannot install it; the MQTT tests will skip" >&2; \
	fi

streaming-clean:
	rm -rf $(TOOLS_DIR)
