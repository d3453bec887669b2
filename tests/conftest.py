import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import torch

from augbench.data.shapes_world import ShapesWorldConfig, load_shapes_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_shapes():
    """64 Shapes World images of 32 px, generated once per session."""
    return load_shapes_world(ShapesWorldConfig(train_size=64, val_size=16, test_size=16), "train")


@pytest.fixture(scope="session")
def float_images(tiny_shapes):
    return tiny_shapes.images[:16].float() / 255


TINY_OVERRIDES = [
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "model.width=0.125",
    "trainer.batch_size=16",
    "trainer.max_steps=2",
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def skip_unless_required(part: str, reason: str) -> None:
    """Skip a test whose real part (postgres, ray) is missing here, or fail it where the environment says the
    part must be there (.ci/run sets AUGBENCH_REQUIRE=postgres,ray), so CI cannot pass by skipping."""
    if part in os.environ.get("AUGBENCH_REQUIRE", "").split(","):
        pytest.fail(f"{reason} (AUGBENCH_REQUIRE names {part})")
    pytest.skip(reason)


def import_or_skip(module: str, part: str, reason: str):
    try:
        return __import__(module)
    except ImportError:
        skip_unless_required(part, reason)


def _postgres_binaries() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (off PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return installed[-1].parent if installed else None


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session, in a temporary directory (initdb, pg_ctl); its base URL.

    PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user."""
    for module in ("sqlalchemy", "psycopg"):
        import_or_skip(module, "postgres", f"PostgreSQL store tests need {module}: pip install 'augbench[postgres]'")
    binaries = _postgres_binaries()
    if binaries is None:
        skip_unless_required("postgres", "no PostgreSQL server here (initdb not found): apt-get install postgresql-15")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="augbench-postgres-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            skip_unless_required("postgres", "running as root without a `postgres` user to run the server as")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = directory / "data"

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)

    initialised = run(str(binaries / "initdb"), "-D", str(data), "-U", "augbench", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
    started = initialised.returncode == 0 and run(
        str(binaries / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"), "-w", "-o",
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start",
    ).returncode == 0
    if not started:
        log = (directory / "server.log").read_text() if (directory / "server.log").is_file() else initialised.stderr
        shutil.rmtree(directory, ignore_errors=True)
        skip_unless_required("postgres", f"the PostgreSQL server did not start: {log.strip()[-300:]}")
    yield f"postgresql://augbench@127.0.0.1:{port}"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """An empty database of its own on the session's server, for one test."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
