"""A dependency-free progress line with rate and ETA, printed by process 0 only."""

import sys
import time

from fno_jax.runtime.distributed import is_main_process


class Progress:
    """`update(step, **fields)` redraws `label [####....] step/total  rate it/s  ETA ...  fields`."""

    def __init__(
        self,
        total: int,
        *,
        label: str = "train",
        start: int = 0,
        stream=None,
        min_interval: float = 0.5,
    ):
        self.total = max(int(total), 1)
        self.label = label
        self.start_step = start
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.enabled = is_main_process()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        if not self.tty:
            self.min_interval = max(min_interval, 10.0)

    def update(self, step: int, *, force: bool = False, **fields) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < self.min_interval):
            return
        self.last = now
        done = step - self.start_step
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        filled = int(30 * step / self.total)
        bar = "#" * filled + "." * (30 - filled)
        extra = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        line = f"{self.label} [{bar}] {step}/{self.total}  {rate:.1f} it/s  ETA {_fmt(eta)}  {extra}"
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
