import sys

import pytest

from shared.bundles.user_errors import find_input_error, report_user_errors
from shared.io.errors import InputError


def _wrapped() -> RuntimeError:
    """An InputError as MONAI's ConfigParser hands it on: inside a RuntimeError, twice."""
    try:
        try:
            try:
                raise InputError("encoder.pt", "no such file or folder")
            except InputError as error:
                raise RuntimeError("Failed to instantiate component 'load_pretrained_encoder'") from error
        except RuntimeError:
            raise RuntimeError("Failed to evaluate '$@transfer'")  # chained as context, not cause
    except RuntimeError as error:
        return error


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_the_user_error_is_found_through_causes_and_contexts():
    assert str(find_input_error(_wrapped())) == "encoder.pt: no such file or folder"
    assert find_input_error(RuntimeError("a bug")) is None and find_input_error(None) is None


def test_the_hook_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.delenv("MISSING_PIECE_DEBUG", raising=False)
    report_user_errors()
    error = _wrapped()
    with pytest.raises(SystemExit) as exited:
        sys.excepthook(type(error), error, error.__traceback__)
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: encoder.pt: no such file or folder\n"


@pytest.mark.parametrize("debug", [False, True])
def test_bugs_and_debug_runs_keep_the_traceback(debug, monkeypatch, capsys):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setenv("MISSING_PIECE_DEBUG", "1" if debug else "0")
    report_user_errors()
    error = _wrapped() if debug else _raised(RuntimeError("a bug"))
    sys.excepthook(type(error), error, error.__traceback__)  # the default hook: prints, does not exit
    printed = capsys.readouterr().err
    assert printed.startswith("Traceback") and ("no such file" if debug else "a bug") in printed
