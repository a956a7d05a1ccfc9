"""Write a launcher jar for Beam's Flink or Spark job server: no classes, only a manifest whose Class-Path names
the jars that ``mvn dependency:copy-dependencies`` put in ``libs/`` beside it, so that Beam's FlinkRunner or
SparkRunner can start it with ``java -jar`` (``--flink_job_server_jar``, ``--spark_job_server_jar``).
``Add-Opens`` gives Flink 1.16 and Spark 3.2 on Java 17 the reflective access they need (Java honours it for the
jar started with ``-jar``).

    python deploy/job_server_jar.py flink .tools/flink/beam-flink-job-server.jar .tools/flink/libs
    python deploy/job_server_jar.py spark .tools/spark/beam-spark-job-server.jar .tools/spark/libs
"""
import sys
import zipfile
from pathlib import Path

MAIN_CLASSES = {"flink": "org.apache.beam.runners.flink.FlinkJobServerDriver",
                "spark": "org.apache.beam.runners.spark.SparkJobServerDriver"}
OPENS = {
    "flink": ("java.base/java.lang", "java.base/java.util", "java.base/java.lang.reflect", "java.base/java.io",
              "java.base/java.nio", "java.base/sun.nio.ch", "java.base/java.net", "java.base/java.util.concurrent",
              "java.base/java.time", "java.base/java.text", "java.sql/java.sql"),
    # what Spark 3.3's launcher opens for Java 17 (Spark 3.2 without them: IllegalAccessError on sun.nio.ch)
    "spark": ("java.base/java.lang", "java.base/java.lang.invoke", "java.base/java.lang.reflect", "java.base/java.io",
              "java.base/java.net", "java.base/java.nio", "java.base/java.util", "java.base/java.util.concurrent",
              "java.base/java.util.concurrent.atomic", "java.base/sun.nio.ch", "java.base/sun.nio.cs",
              "java.base/sun.security.action", "java.base/sun.util.calendar"),
}


def _header(name: str, value: str) -> bytes:
    """One manifest header, wrapped as the JAR spec requires: lines of at most 72 bytes, continued with a space."""
    line = f"{name}: {value}".encode()
    parts, line = [line[:72]], line[72:]
    while line:
        parts.append(b" " + line[:71])
        line = line[71:]
    return b"\r\n".join(parts) + b"\r\n"


def main(runner: str, jar: str, libs: str) -> int:
    if runner not in MAIN_CLASSES:
        print(f"job_server_jar.py: the runner is one of {', '.join(MAIN_CLASSES)}, got {runner!r}", file=sys.stderr)
        return 2
    names = sorted(p.name for p in Path(libs).glob("*.jar"))
    if not names:
        print(f"job_server_jar.py: no jars in {libs}", file=sys.stderr)
        return 1
    relative = Path(libs).resolve().relative_to(Path(jar).resolve().parent)
    manifest = (_header("Manifest-Version", "1.0") + _header("Main-Class", MAIN_CLASSES[runner])
                + _header("Class-Path", " ".join(f"{relative.as_posix()}/{n}" for n in names))
                + _header("Add-Opens", " ".join(OPENS[runner])) + b"\r\n")
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", manifest)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python deploy/job_server_jar.py {flink,spark} JAR LIBS", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:4]))
