"""``botvisor sim-server`` and ``botvisor demo`` refuse out-of-range options as usage errors."""

from __future__ import annotations

import pytest

from supervisor.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim-server", "--rate", "0"], "argument --rate: must be a number > 0 and <= 1000, got 0"),
        (["sim-server", "--rate", "nan"], "argument --rate: must be a number > 0"),
        (["sim-server", "--rate", "fast"], "argument --rate: must be a number > 0"),
        (["sim-server", "--bots", "0"], "argument --bots: must be a whole number >= 1"),
        (["sim-server", "--chats", "-1"], "argument --chats: must be a whole number >= 1"),
        (["sim-server", "--port", "65536"], "argument --port: must be a whole number >= 0"),
        (["demo", "--rate", "inf"], "argument --rate: must be a number > 0"),
        (["demo", "--duration", "0"], "argument --duration: must be a number > 0"),
        (["demo", "--global-rps", "0.5"], "argument --global-rps: must be a number >= 1"),
        (["demo", "--admin-port", "-1"], "argument --admin-port: must be a whole number >= 0"),
    ],
)
def test_an_out_of_range_option_is_a_usage_error_naming_the_range(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
