"""Settings: the contract's defaults, `.env`, and a bad value refused at start (one line naming
the variable, exit code 2, before anything starts)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.config import Settings, load_settings_or_exit, resolve_jwt_secret
from tests.conftest import make_settings
from tests.support import REPO


def scrubbed_env(home: Path, **settings: str) -> dict[str, str]:
    """Only what Python needs, plus the MESSENGER_ variables given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "LANG": "C.UTF-8",
    }
    env.update(settings)
    return env


def serve(cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "serve"],
        env=scrubbed_env(cwd, **settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,  # a node that started would run until this and fail the test
    )


def assert_refused(result: subprocess.CompletedProcess[str], variable: str, cwd: Path) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert result.stdout == ""
    assert sorted(p.name for p in cwd.iterdir()) in ([], [".env"])  # no data dir made


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MESSENGER_ variable and a cwd without a .env file."""
    for name in list(os.environ):
        if name.startswith("MESSENGER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESSENGER_PORT", "notaport"),
        ("MESSENGER_PORT", "70000"),
        ("MESSENGER_DATABASE_URL", "mysql://x"),
        ("MESSENGER_REDIS_URL", "http://x"),
        ("MESSENGER_LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    assert_refused(serve(tmp_path, **{variable: value}), variable, tmp_path)


def test_a_bad_value_in_dotenv_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MESSENGER_PORT=notaport\n")
    assert_refused(serve(tmp_path), "MESSENGER_PORT", tmp_path)


def test_two_bad_values_still_give_one_line(tmp_path: Path) -> None:
    result = serve(tmp_path, MESSENGER_PORT="x", MESSENGER_DATABASE_URL="mysql://x")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_load_settings_or_exit_in_process(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESSENGER_JWT_SECRET", "short")
    with pytest.raises(SystemExit) as exited:
        load_settings_or_exit()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MESSENGER_JWT_SECRET" in err


# --- defaults and sources ------------------------------------------------------------------------


def test_defaults_match_the_contract(clean_env: Path) -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.data_dir == Path("./.messenger")
    assert settings.database_url is None and settings.redis_url is None
    assert settings.embedded
    assert settings.jwt_secret is None
    assert settings.node_id.startswith("node-")
    assert Settings().node_id != settings.node_id  # random per start


def test_dotenv_in_the_cwd_is_read_and_the_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text(
        "MESSENGER_PORT=9191\nMESSENGER_HOST=0.0.0.0\nMESSENGER_NODE_ID=from-dotenv\n"
    )
    monkeypatch.setenv("MESSENGER_NODE_ID", "from-env")
    settings = Settings()
    assert (settings.port, settings.host, settings.node_id) == (9191, "0.0.0.0", "from-env")


def test_with_overrides_validates(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.with_overrides(port=1234).port == 1234
    with pytest.raises(ValueError):
        settings.with_overrides(database_url="mysql://x")


def test_presence_batches_keep_offline_within_5s(tmp_path: Path) -> None:
    assert make_settings(tmp_path, presence_grace=2.0, presence_interval=2.0).presence_interval == 2
    with pytest.raises(ValueError, match=r"at most 4\.5"):
        make_settings(tmp_path, presence_grace=3.0, presence_interval=2.0)


# --- the generated JWT secret ------------------------------------------------------------------


def test_jwt_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, jwt_secret=None)
    first = resolve_jwt_secret(settings)
    path = settings.data_dir / "jwt_secret"
    assert len(first) >= 32
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_jwt_secret(settings) == first
    assert resolve_jwt_secret(make_settings(tmp_path, jwt_secret=None)) == first


def test_a_configured_jwt_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, jwt_secret="configured-secret-0123")
    assert resolve_jwt_secret(settings) == "configured-secret-0123"
    assert not (settings.data_dir / "jwt_secret").exists()


def test_nodes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, jwt_secret=None)
    with ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda _: resolve_jwt_secret(settings), range(8)))
    assert len(set(secrets)) == 1
