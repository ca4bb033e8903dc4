"""Servers a test starts and stops itself: a private PostgreSQL cluster on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import typing as t

PG_BIN = (
    next(
        (
            os.path.join("/usr/lib/postgresql", v, "bin")
            for v in sorted(os.listdir("/usr/lib/postgresql"), reverse=True)
        ),
        "",
    )
    if os.path.isdir("/usr/lib/postgresql")
    else ""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_tool(binary: str, *args: str, timeout: float = 120) -> None:
    """Run one of PostgreSQL's server binaries (as ``postgres`` when we are root), quietly, failing
    loudly."""
    subprocess.run(
        _as_postgres(os.path.join(PG_BIN, binary), *args),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )


def _as_postgres(*command: str) -> list[str]:
    """Run a server binary as the ``postgres`` user when we are root (initdb and postgres refuse
    root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary folder; killed (``-m immediate``) and restarted
    at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="fpa-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        _server_tool("pg_ctl", "-D", self.data, *args)

    def init(self) -> PrivateCluster:
        _server_tool(
            "initdb",
            "-D",
            self.data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c fsync=off"
        )
        self._ctl("-o", options, "-l", self.log, "-w", "-t", "60", "start")
        self.running = True

    def standby(self) -> PrivateCluster:
        """A hot standby of this cluster: ``pg_basebackup -R`` into a new folder, started on another
        port."""
        standby = PrivateCluster()
        _server_tool(
            "pg_basebackup",
            "-D",
            standby.data,
            "-R",
            "-X",
            "stream",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            timeout=300,
        )
        standby.start()
        return standby

    def stop(self) -> None:
        """Stop cleanly (connections are cut)."""
        self._ctl("-m", "fast", "-w", "stop")
        self.running = False

    def kill(self) -> None:
        """Stop at once, as a crash would: no checkpoint, connections cut."""
        self._ctl("-m", "immediate", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            try:
                self.kill()
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def private_cluster() -> t.Iterator[PrivateCluster]:
    """Fixture body: a started cluster, removed afterwards (whatever the test left running)."""
    cluster = PrivateCluster().init()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
