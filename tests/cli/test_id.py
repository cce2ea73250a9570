"""`p2pvoix --help` and `p2pvoix id`, through click's runner and as a real process."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from p2pvoix.cli.main import cli, main


def invoke(*args, env=None):
    runner = CliRunner()
    return runner.invoke(cli, list(args), env=env, catch_exceptions=False)


def run_main(args, capsys):
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Live voice rooms with no server" in result.output
    assert "id" in result.output


def test_id_creates_then_reuses_and_names(tmp_path, capsys):
    code, out, _ = run_main(["id", "--home", str(tmp_path), "--json"], capsys)
    first = json.loads(out)
    assert code == 0 and first["peer_id"].startswith("12D3KooW") and not first["name_set"]
    code, out, _ = run_main(["id", "--home", str(tmp_path), "--name", "Youssef"], capsys)
    assert code == 0 and "Name:        Youssef" in out and first["fingerprint"] in out
    code, out, _ = run_main(["id", "--home", str(tmp_path), "--json"], capsys)
    assert json.loads(out) == {**first, "name": "Youssef", "name_set": True}


def test_home_from_environment(tmp_path):
    result = invoke("id", "--json", env={"P2PVOIX_HOME": str(tmp_path)})
    assert json.loads(result.output)["home"] == str(tmp_path)


def test_errors_map_to_exit_codes_and_messages(tmp_path, capsys):
    (tmp_path / "identity.key").write_text("nonsense")
    (tmp_path / "identity.key").chmod(0o600)
    code, out, err = run_main(["id", "--home", str(tmp_path)], capsys)
    assert code == 1 and "damaged" in err and out == ""
    code, _, err = run_main(["id", "--home", str(tmp_path / "x"), "--name", ""], capsys)
    assert code == 2 and "display name" in err
    code, _, err = run_main(["id", "--bogus"], capsys)
    assert code == 2 and "No such option" in err
    code, _, err = run_main(["nosuchcommand"], capsys)
    assert code == 2


def test_real_subprocess(tmp_path):
    env = {**os.environ, "P2PVOIX_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "p2pvoix", "id", "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["home"] == str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "p2pvoix", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Usage: p2pvoix" in result.stdout
