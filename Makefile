# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv from requirements.lock
# when needed (Python 3.11; nothing is installed by hand).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqwatch-installed

.PHONY: demo test test-fast airflow fake-gcs-server bench-accuracy bench-speed bench-models bench-stream bench-stream-fleet bench-stream-idle bench-soak bench-csv bench-calibration bench-calibration-series bench-small-files bench-quarantine bench-runners clean

$(STAMP): requirements.lock setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=70" wheel
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seqwatch demo --output demo-output

# The streaming tests need Prism, Kafka's jars and the Pub/Sub emulator (streaming.mk); where one cannot be
# provisioned, those tests skip and say why.
# Three pytest-xdist workers on the two cores (TEST_WORKERS=1: one process, in file order), the streaming tests
# first (tests/conftest.py). --dist worksteal: each worker starts on its share of the tests and takes tests from
# another's once its own are done. With --dist load one worker had run out of tests 9 minutes in while the other
# still had 7 minutes of them queued (load hands out tests in chunks ahead of time): 16.0 minutes against 12.1 with
# worksteal. Many tests wait (a broker's outage, a stream's idle stop, a lease), so a third worker overlaps those
# waits: 13.8 minutes against 16.5 with two on the same code (2026-12-06), the same CPU time (22.8 minutes) and every
# test passed; with --dist load a third had not helped (16.0 against 16.1).
TEST_WORKERS ?= 3

test: $(STAMP)
	$(MAKE) streaming-tools || echo "make: streaming tools unavailable; tests/streaming will skip"
	$(MAKE) fake-gcs-server || echo "make: fake-gcs-server unavailable; the GCS tests of the output lock will skip"
	$(MAKE) airflow || echo "make: Airflow unavailable; tests/e2e/test_airflow_dag.py will skip"
	$(BIN)/pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow" $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal)

# fake-gcs-server, a Google Cloud Storage emulator built with Go from the Go module proxy (~30 s), for the tests of
# the output lock on gs:// (tests/pipelines/test_output_lock_stores.py): it holds a write to its ifGenerationMatch
# condition, which gcp-storage-emulator (the other GCS tests' emulator) does not. One stamp per version.
FAKE_GCS_VERSION := 1.56.1
FAKE_GCS_STAMP := .tools/bin/.fake-gcs-server-v$(FAKE_GCS_VERSION)

fake-gcs-server: $(FAKE_GCS_STAMP)

$(FAKE_GCS_STAMP):
	@command -v go >/dev/null || { echo "make: Go is needed to build fake-gcs-server" >&2; exit 1; }
	@mkdir -p .tools/bin
	GOBIN=$(abspath .tools/bin) GOFLAGS=-buildvcs=false go install github.com/fsouza/fake-gcs-server@v$(FAKE_GCS_VERSION)
	@rm -f .tools/bin/.fake-gcs-server-v*
	@touch $@

# Airflow 3 in its own virtual environment (.tools/airflow), for the DAG in deploy/airflow and its test; its pins
# (deploy/airflow/requirements.lock) are not seqwatch's, so it is kept apart from .venv.
AIRFLOW_VENV := .tools/airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): deploy/airflow/requirements.lock
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet -r deploy/airflow/requirements.lock
	touch $@

bench-accuracy: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py

bench-models: $(STAMP)
	$(BIN)/python benchmarks/models.py

bench-speed: $(STAMP)
	$(BIN)/python benchmarks/speed.py

bench-csv: $(STAMP)
	$(BIN)/python benchmarks/csv_parse.py

bench-calibration: $(STAMP)
	$(BIN)/python benchmarks/calibration_cost.py

bench-calibration-series: $(STAMP)
	$(BIN)/python benchmarks/calibration_series.py

bench-small-files: $(STAMP)
	$(BIN)/python benchmarks/small_files.py

bench-quarantine: $(STAMP)
	$(BIN)/python benchmarks/quarantine_cost.py

bench-runners: $(STAMP) prism flink-job-server spark-job-server
	$(BIN)/python benchmarks/batch_runners.py

bench-stream: $(STAMP) prism kafka-jars flink-job-server
	$(BIN)/python benchmarks/stream_latency.py

bench-stream-fleet: $(STAMP) prism
	$(BIN)/python benchmarks/stream_fleet.py

# Quiet streams: Kafka, MQTT and the Pub/Sub emulator on Prism (0.5 s and 5 s batches) and Kafka on Flink, each
# alone with nothing to read; the CPU of seqwatch and its job server (~14 min)
bench-stream-idle: $(STAMP) prism kafka-jars pubsub-emulator flink-job-server
	$(BIN)/python benchmarks/stream_idle.py

# Three streams (Kafka, MQTT, Pub/Sub emulator) fed live for 10 minutes each, at once (~13 min)
bench-soak: $(STAMP) prism kafka-jars pubsub-emulator
	$(BIN)/python benchmarks/stream_soak.py

clean: streaming-clean
	rm -rf $(VENV) demo-output build *.egg-info

include streaming.mk
