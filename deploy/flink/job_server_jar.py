"""Write a launcher jar for Beam's Flink job server: no classes, only a manifest whose Class-Path names the
jars that ``mvn dependency:copy-dependencies`` put in ``libs/`` beside it, so that Beam's FlinkRunner can start it
with ``java -jar`` (``--flink_job_server_jar``). ``Add-Opens`` gives Flink 1.16 on Java 17 the reflective access
it needs (Java honours it for the jar started with ``-jar``).

    python deploy/flink/job_server_jar.py .tools/flink/beam-flink-job-server.jar .tools/flink/libs
"""
import sys
import zipfile
from pathlib import Path

MAIN_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
OPENS = ("java.base/java.lang", "java.base/java.util", "java.base/java.lang.reflect", "java.base/java.io",
         "java.base/java.nio", "java.base/sun.nio.ch", "java.base/java.net", "java.base/java.util.concurrent",
         "java.base/java.time", "java.base/java.text", "java.sql/java.sql")


def _header(name: str, value: str) -> bytes:
    """One manifest header, wrapped as the JAR spec requires: lines of at most 72 bytes, continued with a space."""
    line = f"{name}: {value}".encode()
    parts, line = [line[:72]], line[72:]
    while line:
        parts.append(b" " + line[:71])
        line = line[71:]
    return b"\r\n".join(parts) + b"\r\n"


def main(jar: str, libs: str) -> int:
    names = sorted(p.name for p in Path(libs).glob("*.jar"))
    if not names:
        print(f"job_server_jar.py: no jars in {libs}", file=sys.stderr)
        return 1
    relative = Path(libs).resolve().relative_to(Path(jar).resolve().parent)
    manifest = (_header("Manifest-Version", "1.0") + _header("Main-Class", MAIN_CLASS)
                + _header("Class-Path", " ".join(f"{relative.as_posix()}/{n}" for n in names))
                + _header("Add-Opens", " ".join(OPENS)) + b"\r\n")
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
