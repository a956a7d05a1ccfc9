# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv from requirements.lock
# when needed (Python 3.11; nothing is installed by hand).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqwatch-installed

.PHONY: demo test test-fast bench-accuracy bench-speed bench-models bench-stream bench-csv bench-calibration clean

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
test: $(STAMP)
	$(MAKE) streaming-tools || echo "make: streaming tools unavailable; tests/streaming will skip"
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

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

bench-stream: $(STAMP) prism kafka-jars flink-job-server
	$(BIN)/python benchmarks/stream_latency.py

clean: streaming-clean
	rm -rf $(VENV) demo-output build *.egg-info

include streaming.mk
