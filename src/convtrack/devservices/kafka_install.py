"""What the local Kafka broker needs on this machine: Java 17+ and Kafka's own jars.

No containers and no Kafka download: a throwaway Maven project that depends on
``org.apache.kafka:kafka_2.13`` gives the broker's classpath
(``mvn dependency:copy-dependencies``), cached outside the repo in
``~/.cache/convtrack/kafka-<version>/lib`` (``$XDG_CACHE_HOME`` is honoured)
after the first fetch; ``$CONVTRACK_KAFKA_LIB`` names a ready folder instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from convtrack.devservices.process import DevServiceError

KAFKA_VERSION: Final = "4.4.0"
# The broker's jars bring slf4j 1.7 without a binding; these make it log through log4j2.
_SLF4J_VERSION: Final = "2.0.17"
_LOG4J_VERSION: Final = "2.25.5"
JAVA_MIN_MAJOR: Final = 17
LIB_ENV_VAR: Final = "CONVTRACK_KAFKA_LIB"


class KafkaUnavailableError(DevServiceError):
    """Java, Maven or the Kafka jars cannot be had on this machine."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convtrack"


def find_java() -> Path:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java``, else PATH); Java 17+."""
    java: Path | None = None
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        java = Path(home) / "bin" / "java"
    elif on_path := shutil.which("java"):
        java = Path(on_path)
    if java is None:
        raise KafkaUnavailableError(
            "Java was not found (no `java` on PATH, no JAVA_HOME): the local Kafka broker "
            f"needs Java {JAVA_MIN_MAJOR} or newer (on Debian/Ubuntu: "
            "`apt-get install openjdk-17-jre-headless`)"
        )
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaUnavailableError(f"{java} -version failed: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0_x" is Java 8
            major = int(match.group(2))
        if major < JAVA_MIN_MAJOR:
            raise KafkaUnavailableError(
                f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {JAVA_MIN_MAJOR} "
                "or newer: set JAVA_HOME to one (on Debian/Ubuntu: "
                "`apt-get install openjdk-17-jre-headless`)"
            )
    return java


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.slf4j", "slf4j-api", _SLF4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", _LOG4J_VERSION),
    ]
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "<modelVersion>4.0.0</modelVersion>\n"
        "<groupId>convtrack.dev</groupId><artifactId>kafka-broker</artifactId>"
        "<version>1</version><packaging>pom</packaging>\n"
        f"<dependencies>\n{body}</dependencies>\n</project>\n"
    )


def kafka_lib(version: str = KAFKA_VERSION, *, fetch: bool = True) -> Path:
    """The folder of the broker's jars, fetched with Maven on first use.

    ``$CONVTRACK_KAFKA_LIB`` points at a ready folder instead. Raises
    KafkaUnavailableError (with how to fix it) when Maven is missing or the
    fetch fails.
    """
    override = os.environ.get(LIB_ENV_VAR)
    if override:
        lib = Path(override)
        if not any(lib.glob("kafka_2.13-*.jar")):
            raise KafkaUnavailableError(
                f"{LIB_ENV_VAR}={override} holds no kafka_2.13-*.jar; unset it to fetch "
                "the jars with Maven"
            )
        return lib
    home = cache_root() / f"kafka-{version}"
    lib = home / "lib"
    if (lib / f"kafka_2.13-{version}.jar").is_file():
        return lib
    if not fetch:
        raise KafkaUnavailableError(f"the Kafka {version} jars are not in {lib} yet")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailableError(
            f"Maven (`mvn`) was not found: it fetches Kafka {version}'s jars once into {lib} "
            "(on Debian/Ubuntu: `apt-get install maven`; or put the jars of a Kafka "
            f"distribution's libs/ folder there, or set {LIB_ENV_VAR} to such a folder)"
        )
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=home))
    try:
        (work / "pom.xml").write_text(_pom(version))
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DoutputDirectory=lib",
            "-DincludeScope=runtime",
        ]
        try:
            out = subprocess.run(
                cmd, cwd=work, capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KafkaUnavailableError(
                f"fetching the Kafka jars with Maven failed: {exc}"
            ) from exc
        if out.returncode != 0 or not (work / "lib" / f"kafka_2.13-{version}.jar").is_file():
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise KafkaUnavailableError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} and its "
                "dependencies (it needs Maven Central, or a settings.xml mirror, or a "
                f"~/.m2 that already holds them):\n{tail}"
            )
        # Two fetches at once: the first rename wins, the other's copy is dropped.
        with contextlib.suppress(OSError):
            os.rename(work / "lib", lib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (lib / f"kafka_2.13-{version}.jar").is_file():
        raise KafkaUnavailableError(f"the Kafka jars did not land in {lib}")
    return lib
