"""A backend whose functions send deprogressapi progress reports (it imports demessaging_rs only)."""

from typing import List

from deprogressapi import BaseReport, ProgressReport

from demessaging_rs import main

__all__ = ["count_steps", "broken_report", "plain"]


def count_steps(n: int, reporter: ProgressReport = ProgressReport(step_message="counting")) -> List[int]:
    """Count to `n`, one sub-report per step: the caller sees a report when it starts, one when each step
    starts and ends, and one when it is done."""
    out = []
    with reporter:
        for i in range(n):
            with reporter.create_subreport(step_message=f"step {i}"):
                out.append(i)
    return out


class FailingReport(BaseReport):
    """A report whose submit() raises."""

    def submit(self) -> None:
        raise RuntimeError("this report cannot be submitted")


def broken_report(reporter: FailingReport = FailingReport()) -> str:
    """Submits a report that raises."""
    reporter.submit()
    return "unreachable"


def plain(x: int) -> int:
    """No report involved."""
    return x + 1


if __name__ == "__main__":
    main()
