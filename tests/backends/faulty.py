"""Backend for the fault tests: every call appends `<pid> <tag>` to the file named by FAULT_MARKS first, so a
test can tell which replica ran what and that nothing ran twice."""
import os
import time

from demessaging_rs import main

__all__ = ["work"]


def work(tag: str, seconds: float = 0.0) -> str:
    """Record the call, sleep `seconds`, return the tag."""
    marks = os.environ.get("FAULT_MARKS")
    if marks:
        with open(marks, "a") as f:
            f.write(f"{os.getpid()} {tag}\n")
    time.sleep(seconds)
    return tag


if __name__ == "__main__":
    main(messaging_config=dict(topic="faulty"))
