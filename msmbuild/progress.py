"""Progress where people look: a bar on a terminal, periodic lines in a log file.

Under Snakemake or SLURM a command's stderr is a log file, where a tqdm bar is either off
or a smear of carriage returns. There, :class:`Progress` writes one plain line every
``MSMBUILD_PROGRESS_EVERY_S`` seconds (default 30) and one at the end: count, percent,
rate, elapsed, ETA and the latest values (e.g. the loss).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

EVERY_S_ENV = "MSMBUILD_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0


def line_interval() -> float:
    """Seconds between progress lines in a log (MSMBUILD_PROGRESS_EVERY_S, default 30)."""
    try:
        return max(0.0, float(os.environ.get(EVERY_S_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def duration(seconds: float) -> str:
    """Seconds as 1h02m03s / 2m03s / 3s."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def status_line(text: str, stream: IO[str] | None = None) -> None:
    """One progress line that does not tear a bar on a terminal."""
    from tqdm import tqdm

    tqdm.write(text, file=stream or sys.stderr)
    (stream or sys.stderr).flush()


class Progress:
    """Counts toward a total: a tqdm bar on a terminal, else periodic log lines."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0,
                 stream: IO[str] | None = None, leave: bool = False):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._first = initial
        self.postfix: dict[str, Any] = {}
        self.every_s = line_interval()
        self._start = self._last = time.monotonic()
        self._printed = initial
        self.bar = None
        self.lines = enabled and not _isatty(self.stream)
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, leave=leave)

    def update(self, k: int = 1, **postfix: Any) -> None:
        """Count k more done; postfix values (loss=...) are shown with the count."""
        self.n += k
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(k)
            if postfix:
                self.bar.set_postfix(**postfix)
        elif self.lines and time.monotonic() - self._last >= self.every_s:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        rate = (self.n - self._first) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {duration((self.total - self.n) / rate)}" if rate > 0 and self.total > self.n else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        status_line(f"{self.desc}: {self.n}/{self.total} {self.unit}s{pct}, {rate:.2f} {self.unit}/s, "
                    f"elapsed {duration(elapsed)}{eta}{extra}", self.stream)
        self._last, self._printed = now, self.n

    def close(self) -> None:
        """Close the bar, or write the final line if anything happened since the last one."""
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.n != self._printed:
            self._line()
