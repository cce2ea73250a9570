"""Settings: command line over config file over defaults; bad files are explained."""

import pytest

from p2pvoix.node.config import DEFAULT_LISTEN, ConfigError, TurnServer, build_config


def test_defaults(tmp_path):
    config = build_config(tmp_path)
    assert config.listen == DEFAULT_LISTEN and config.bootstrap == () and config.lan


def test_file_then_command_line(tmp_path):
    (tmp_path / "config.toml").write_text(
        'bootstrap = ["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWA"]\n'
        "lan = false\n"
        'turn = [{url = "turn:10.0.0.9:3478", username = "u", credential = "p"}]\n'
    )
    config = build_config(tmp_path, bootstrap=("/ip4/10.0.0.2/tcp/1/p2p/12D3KooWB",), lan=None)
    assert config.bootstrap == (
        "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWA", "/ip4/10.0.0.2/tcp/1/p2p/12D3KooWB")
    assert config.lan is False
    assert config.turn == (TurnServer("turn:10.0.0.9:3478", "u", "p"),)
    assert build_config(tmp_path, lan=True).lan is True


@pytest.mark.parametrize(
    "text",
    ["bootstrap = 'not a list'", "lan = 'yes'", "colour = 'blue'", "relay_slots = -1",
     "turn = [{host = 'x'}]", "this is not toml"],
)
def test_bad_config_files_are_explained(tmp_path, text):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        build_config(tmp_path)
    assert "config.toml" in caught.value.user_message and caught.value.exit_code == 2
