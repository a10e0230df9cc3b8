"""Progress lines: a redrawn bar on a terminal, one line per tenth of the work on a file or pipe, one line per
interval (and the final count once) through a log."""

import io

from spinlock_assets.core.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_one_plain_line_per_tenth_of_the_work() -> None:
    stream = io.StringIO()
    with Progress(stream=stream, label="replayed") as progress:
        for done in range(1, 41):
            progress(done, 40)
    lines = stream.getvalue().splitlines()
    # a line every ceil(40 / 10) = 4 operators
    assert [line.split(" (")[0] for line in lines] == [f"replayed {n}/40" for n in range(4, 41, 4)]
    assert "\r" not in stream.getvalue() and all("ETA" in line for line in lines)


def test_a_terminal_gets_one_redrawn_line() -> None:
    stream = _Terminal()
    with Progress(stream=stream) as progress:
        for done in range(1, 6):
            progress(done, 5)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and "5/5" in text.split("\r")[-1]


def test_a_log_gets_the_final_count_once_even_for_a_short_loop() -> None:
    lines: list[str] = []
    with Progress(emit=lines.append, interval_s=60.0) as progress:
        for done in range(1, 4):
            progress(done, 3)
    assert len(lines) == 1 and lines[0].startswith("operators 3/3 (") and "ETA" in lines[0]


def test_a_log_gets_a_line_per_interval() -> None:
    lines: list[str] = []
    with Progress(emit=lines.append, interval_s=0.0) as progress:
        for done in range(1, 4):
            progress(done, 3)
    assert [line.split(" (")[0] for line in lines] == ["operators 1/3", "operators 2/3", "operators 3/3"]
