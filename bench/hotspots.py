"""Summarize a py-spy ``--format raw --threads`` profile: where the server spends its CPU.

    .venv/bin/python bench/hotspots.py /tmp/prof/track.txt [--top 20]

Each line of the input is ``frame;frame;...;frame COUNT`` (outermost first), the
first frame naming the thread. Printed, per thread: samples, then the functions
with the most self samples, the most inclusive samples, and the convtrack source
lines that were deepest on the stack (their own time plus the library code they
called).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
# Leaf frames that mean "blocked, not burning CPU" (py-spy cannot always tell).
_WAITING = ("Condition.wait (threading.py)", "Thread._wait_for_tstate_lock (threading.py)")


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``."""
    return _LINE.sub(")", frame)


def load(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """Stacks by thread name."""
    by_thread: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        by_thread[thread].append((frames[1:], int(count)))
    return by_thread


def print_report(path: Path, top: int = 15) -> None:
    by_thread = load(path)
    total = sum(n for stacks in by_thread.values() for _, n in stacks)
    if not total:
        print(f"{path}: no samples")
        return
    for thread, stacks in sorted(by_thread.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        samples = sum(n for _, n in stacks)
        waiting = sum(n for frames, n in stacks if frames and _function(frames[-1]) in _WAITING)
        print(f"\n-- thread {thread}: {samples} samples, {100 * waiting / samples:.0f}% of them"
              " blocked in a Condition wait")  # fmt: skip
        if waiting == samples:
            continue
        self_time: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        convtrack_lines: Counter[str] = Counter()
        for frames, n in stacks:
            if frames:
                self_time[_function(frames[-1])] += n
            for name in {_function(f) for f in frames}:
                inclusive[name] += n
            ours = [f for f in frames if "(convtrack/" in f]
            if ours:
                convtrack_lines[ours[-1]] += n
        sections = (
            ("self", self_time),
            ("inclusive, convtrack functions", +Counter(
                {k: v for k, v in inclusive.items() if "(convtrack/" in k and v < samples}
            )),
            ("deepest convtrack line (own + library callees)", convtrack_lines),
        )  # fmt: skip
        for title, counter in sections:
            print(f"   {title}:")
            for name, n in counter.most_common(top):
                print(f"     {100 * n / samples:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("profile", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for path in args.profile:
        print(f"=== {path} ===")
        print_report(path, args.top)


if __name__ == "__main__":
    main()
