"""A small time-bounded fuzz engine over hypothesis strategies.

A :class:`Target` is a strategy of inputs and a property ``check(input) -> outcome``: the outcome names what
the parser did (``"ok"``, or the declared error's class name) and anything else it raises is a finding.
:func:`fuzz` runs a target for N seconds in batches of hypothesis runs (fresh random seeds each batch, no
example database), shrinks the first input of every distinct finding, saves it under ``fuzz/crashes/``
and keeps going; later inputs that fail the same way are counted, not shrunk again.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

CRASH_DIR = Path(__file__).resolve().parent / "crashes"

Check = Callable[[Any], str]


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Check | None = None
    """The property, for targets that need no set-up."""
    session: Callable[[], contextlib.AbstractContextManager[Check]] | None = None
    """For targets that need set-up (a running proxy): a context manager yielding the property."""
    describe: Callable[[Any], bytes] = field(default=lambda value: repr(value).encode())
    """The input as saved in a crash file."""

    @contextlib.contextmanager
    def open(self) -> Iterator[Check]:
        if self.session is not None:
            with self.session() as check:
                yield check
        else:
            assert self.check is not None
            yield self.check


@dataclass
class Finding:
    signature: str
    exception: str
    input: Any
    traceback: str
    count: int = 1
    path: Path | None = None


@dataclass
class Stats:
    target: str
    executions: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: dict[str, Finding] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def report(self) -> str:
        lines = [
            f"target {self.target}: {self.executions} executions in {self.seconds:.0f} s "
            f"({self.rate:.0f}/s), {len(self.findings)} finding(s)",
            "  outcomes: " + ", ".join(f"{k}={v}" for k, v in self.outcomes.most_common()),
        ]
        for f in self.findings.values():
            where = f" -> {f.path}" if f.path else ""
            lines.append(f"  FINDING {f.exception} x{f.count} at {f.signature}{where}")
            lines.append(f"    input: {_short(repr(f.input))}")
        return "\n".join(lines)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def signature_of(exc: BaseException) -> str:
    """Exception type and the innermost project frame: one finding per distinct bug, not per input."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/sigproxy/" in f.filename] or frames
    last = ours[-1] if ours else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__}@{where}"


def fuzz(target: Target, seconds: float, *, batch: int = 2000, save: bool = True,
         log: Callable[[str], None] = print) -> Stats:
    stats = Stats(target.name)
    with target.open() as check:
        # ``seconds`` of fuzzing: the clock starts once the target is up (a target that starts a proxy may take
        # most of a short budget to start on a busy machine, and leave it one execution).
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            failing: list[tuple[Any, BaseException]] = []
            prop = _property(check, stats, failing, deadline)
            test = settings(
                max_examples=batch, deadline=None, database=None, derandomize=False,
                suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                report_multiple_bugs=False,
            )(given(target.strategy)(prop))
            try:
                test()
            except Exception as exc:
                if not failing:
                    raise  # the engine itself broke (hypothesis error), not the target
                value, first = failing[-1]  # the last failure seen is the shrunk one
                sig = signature_of(first)
                finding = Finding(sig, f"{type(first).__name__}: {first}", value,
                                  "".join(traceback.format_exception(first)))
                stats.findings[sig] = finding
                stats.outcomes["finding:" + sig] += 1
                if save:
                    finding.path = save_crash(target, finding)
                log(f"[{target.name}] FINDING {sig}: {_short(repr(value))}")
                del exc
    stats.seconds = time.monotonic() - start
    return stats


def _property(check: Check, stats: Stats, failing: list[tuple[Any, BaseException]],
              deadline: float) -> Callable[[Any], None]:
    def prop(value: Any) -> None:
        if time.monotonic() > deadline and not failing:
            return
        stats.executions += 1
        try:
            outcome = check(value)
        except Exception as exc:
            sig = signature_of(exc)
            known = stats.findings.get(sig)
            if known is not None:
                known.count += 1
                stats.outcomes["finding:" + sig] += 1
                return
            failing.append((value, exc))
            raise
        stats.outcomes[outcome] += 1

    return prop


def save_crash(target: Target, finding: Finding) -> Path:
    CRASH_DIR.mkdir(exist_ok=True)
    digest = hashlib.sha256(finding.signature.encode()).hexdigest()[:10]
    path = CRASH_DIR / f"{target.name}-{digest}.txt"
    path.write_bytes(
        b"target: " + target.name.encode() + b"\nfinding: " + finding.signature.encode()
        + b"\nexception: " + finding.exception.encode("utf-8", "backslashreplace")
        + b"\n\ninput (python repr):\n" + repr(finding.input).encode() + b"\n\ninput (as sent):\n"
        + target.describe(finding.input) + b"\n\n" + finding.traceback.encode("utf-8", "backslashreplace")
    )
    return path
