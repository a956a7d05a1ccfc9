"""seqwatch: anomaly detection and forecasting for sensor, energy and health signals on Apache Beam.

The repository keeps the three packages in top-level folders (``models/``, ``schemas/``, ``pipelines/``);
``package_dir`` maps them into the ``seqwatch`` namespace so that an install never adds a top-level
``models`` or ``schemas`` package to site-packages. ``seqwatch`` itself is an implicit namespace package.
"""
from setuptools import setup

PACKAGES = {
    "seqwatch.schemas": "schemas",
    "seqwatch.models": "models",
    "seqwatch.pipelines": "pipelines",
    "seqwatch.schemas.suites": "schemas/suites",  # data only (the bundled great-expectations suites)
}

# Ranges, not pins: the tested set of exact versions lives in requirements.lock. Beam is pinned exactly
# because an open range makes pip backtrack to old Beam source releases that do not build (FACTS.md).
INSTALL_REQUIRES = [
    "apache-beam[aws]==2.77.0",  # [aws]: boto3, for inputs and outputs on S3 (s3://; tests/e2e/test_object_store.py)
    # Beam's GCS file system (gs://) needs only Google's storage client, not the whole [gcp] extra (BigQuery,
    # Vertex AI, Dataflow's client: about 60 more packages); tests/e2e/test_gcs.py runs it against an emulator
    "google-cloud-storage>=2.14,<4",
    "keras>=3.10,<4",
    "jax[cpu]>=0.6",
    "great_expectations>=1.3,<2",
    "pandas>=2.2",
    "pyarrow>=15,<26",
    "numpy>=1.26,<2.5",
    "scipy>=1.11",
    "matplotlib>=3.8",
    # the stream readers (pipelines/broker_sources.py) import these where they run: on Beam workers installed
    # from this package (--setup_file) too (found by the bug hunt of deploy examples: they were in the lock only)
    "confluent-kafka>=2.3,<3",
    "google-cloud-pubsub>=2.20,<3",
    "paho-mqtt>=2,<3",
    "zstandard>=0.18,<1",  # .zst inputs, decompressed a block at a time (pipelines/decompression.py); Beam's own pin
]

setup(
    name="seqwatch",
    version="0.1.0",
    description="Beam pipelines that score time series with seq2seq Keras autoencoders and write alerts to Parquet",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={"seqwatch.schemas.suites": ["*.json"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    # moto with Flask: an S3 server on 127.0.0.1 for the tests of s3:// inputs and outputs; gcp-storage-emulator:
    # a GCS server on 127.0.0.1 for those of gs:// (it takes the client's batch requests, which Beam's renames use);
    # DuckDB: the outputs are read as the README tells its users to read them
    extras_require={"test": ["pytest>=8", "hypothesis>=6", "moto[s3]>=5", "flask>=3", "flask-cors>=4",
                             "gcp-storage-emulator>=2026.7", "duckdb>=1.1"]},
    entry_points={"console_scripts": ["seqwatch=seqwatch.pipelines.cli:main"]},
)
