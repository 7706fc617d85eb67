"""Progress output: a bar on a terminal, plain lines in a log, nothing under TQDM_DISABLE."""

from __future__ import annotations

import io

import pytest

from autoseg.utils.progress_bars import (
    PlainProgress,
    SilentProgress,
    plain_line,
    plain_line_due,
    progress_bar,
    progress_disabled,
    seconds_text,
    write_line,
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test advances (seconds)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def enabled(monkeypatch):
    """Progress output on (tests/conftest.py sets TQDM_DISABLE=1 for the suite)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


def test_tqdm_disable_values():
    assert progress_disabled({"TQDM_DISABLE": "1"})
    assert progress_disabled({"TQDM_DISABLE": "True"})
    for value in ("", "0", "false", "No", "off"):
        assert not progress_disabled({"TQDM_DISABLE": value}), value
    assert not progress_disabled({})


def test_a_line_is_due_at_each_percent_step_not_faster_than_the_minimum_gap():
    # 26 of 260 is 10 %: a new step, 5 s after the last line
    assert plain_line_due(26, 260, 5.0, 0)
    assert not plain_line_due(25, 260, 5.0, 0)  # 9.6 %: same step as 0
    assert not plain_line_due(26, 260, 1.0, 0)  # a new step, but 1 s after the last line
    assert not plain_line_due(30, 260, 5.0, 26)  # still 11 %
    assert plain_line_due(52, 260, 5.0, 26)
    assert plain_line_due(260, 260, 2.0, 234)


def test_a_line_is_due_after_the_maximum_gap_even_without_a_total():
    assert plain_line_due(3, None, 60.0, 2)
    assert not plain_line_due(3, None, 59.0, 2)
    assert plain_line_due(3, 1000, 61.0, 2)  # far from the next 10 %
    assert not plain_line_due(2, 1000, 600.0, 2)  # nothing new since the last line


def test_plain_line_text():
    assert plain_line("preprocess 3d_fullres", 120, 260, "case", 12.34) \
        == "preprocess 3d_fullres: 120/260 cases (46%), 12.3 s"
    assert plain_line("predict", 1, 1, "case", 0.5, done=True) == "predict: 1/1 case (100%), 0.5 s, done"
    assert plain_line("convert", 7, None, "case", 150.0, postfix="loss=0.100") \
        == "convert: 7 cases, 2.5 min, loss=0.100"
    assert seconds_text(7200) == "2.0 h"


def test_plain_lines_at_the_interval_and_a_final_line():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(None, "preprocess 3d_fullres", 260, "case", stream, clock=clock)
    for _ in range(260):
        clock.now += 0.5  # 130 s in all: 13 s per 10 %
        bar.update(1)
    bar.close()
    bar.close()  # once only
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "preprocess 3d_fullres: 26/260 cases (10%), 13.0 s"
    assert len(lines) == 10  # 10 %, 20 %, ..., 90 % and the final line
    assert lines[-1] == "preprocess 3d_fullres: 260/260 cases (100%), 2.2 min, done"


def test_a_fast_loop_writes_only_its_final_line(enabled):
    stream = io.StringIO()
    seen = list(progress_bar(range(50), desc="evaluating", unit="case", stream=stream))
    assert seen == list(range(50))
    text = stream.getvalue()
    assert text.startswith("evaluating: 50/50 cases (100%), ") and text.endswith(" s, done\n")
    assert text.count("\n") == 1


def test_an_unfinished_loop_says_so_without_done(enabled):
    stream = io.StringIO()
    with progress_bar(total=4, desc="convert", unit="case", stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue().startswith("convert: 3/4 cases (75%), ")
    assert "done" not in stream.getvalue()


def test_a_bar_on_a_terminal(enabled):
    stream = Terminal()
    seen = list(progress_bar(range(5), desc="predict", unit="case", stream=stream))
    assert seen == list(range(5))
    assert "\r" in stream.getvalue()
    assert "predict" in stream.getvalue() and "5/5" in stream.getvalue()


def test_inner_loops_write_nothing_in_a_log_but_a_bar_on_a_terminal(enabled):
    log = io.StringIO()
    bar = progress_bar(range(3), desc="epoch 1/2", stream=log, leave=False, plain_lines=False)
    for _ in bar:
        bar.set_postfix(loss="0.500")
    bar.close()
    assert log.getvalue() == ""
    terminal = Terminal()
    with progress_bar(total=3, desc="sliding window", stream=terminal, plain_lines=False) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue()


def test_tqdm_disable_silences_bars_and_lines(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for stream in (io.StringIO(), Terminal()):
        bar = progress_bar(range(4), desc="predict", stream=stream)
        assert isinstance(bar, SilentProgress)
        assert list(bar) == [0, 1, 2, 3]
        with progress_bar(total=4, desc="preprocess", stream=stream) as counted:
            counted.update(4)
            counted.set_postfix(loss=1.0)
        assert stream.getvalue() == ""


def test_disable_argument_silences_too(enabled):
    stream = Terminal()
    assert list(progress_bar(iter("ab"), desc="x", disable=True, stream=stream)) == ["a", "b"]
    assert stream.getvalue() == ""


def test_write_line_prints_when_no_bar_is_drawn(capsys, enabled):
    write_line("epoch 1/2: train loss 0.5")
    assert capsys.readouterr().out == "epoch 1/2: train loss 0.5\n"
