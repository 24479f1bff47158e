"""Remote destinations: ``AET=HOST:PORT`` with ``;associations=N``, from the options and a TOML file."""
from __future__ import annotations

import argparse

import pytest

from pacsnode.cli import build_config
from pacsnode.config import ConfigError, Remote


@pytest.mark.parametrize(
    "text,expected",
    [
        ("VIEWER=10.0.0.5:104", Remote("VIEWER", "10.0.0.5", 104, 1)),
        ("VIEWER=10.0.0.5:104;associations=1", Remote("VIEWER", "10.0.0.5", 104, 1)),
        ("VIEWER=10.0.0.5:104;associations=4", Remote("VIEWER", "10.0.0.5", 104, 4)),
        ("V=::1:104;associations=16", Remote("V", "::1", 104, 16)),
        ("V=h:104; associations = 2 ", Remote("V", "h", 104, 2)),
    ],
)
def test_parse(text, expected):
    assert Remote.parse(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("V=h:104;associations=0", "associations=0: use 1 to 16"),
        ("V=h:104;associations=17", "associations=17: use 1 to 16"),
        ("V=h:104;associations=two", "associations='two' is not a number"),
        ("V=h:104;associations=-1", "is not a number"),
        ("V=h:104;associations", "associations='' is not a number"),
        ("V=h:104;speed=2", "unknown option 'speed' (known: associations=N)"),
        ("V=h:104;", "unknown option ''"),
        ("V=h;associations=2", "expected AET=HOST:PORT[;associations=N]"),
    ],
)
def test_parse_refuses(text, message):
    with pytest.raises(ConfigError) as raised:
        Remote.parse(text)
    assert message in str(raised.value)


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, **values})


def test_options_and_config_file(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text('remote = ["A=127.0.0.1:104;associations=3"]\n')
    built = build_config(_args(config=config, remote=["B=127.0.0.1:105"]))
    assert built.remote("A") == Remote("A", "127.0.0.1", 104, 3)
    assert built.remote("B") == Remote("B", "127.0.0.1", 105, 1)


WITH_OPTIONS = "RIS=127.0.0.1:104;associations=2"


@pytest.mark.parametrize("values", [{"ian": [WITH_OPTIONS]}, {"mpps_forward": [WITH_OPTIONS]}, {"worklist": WITH_OPTIONS}])
def test_only_move_destinations_take_options(values):
    """The RIS side's peers get one association a message or query: no options there."""
    with pytest.raises(ConfigError, match="are for --remote only"):
        build_config(_args(**values))
