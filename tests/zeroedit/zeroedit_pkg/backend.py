"""Shout and count words (imports only `demessaging`, never `demessaging_rs`)."""

from typing import Dict

from demessaging import configure, main
from demessaging.config import registry
from demessaging.messaging.constants import MessageType
from pydantic import BaseModel

__all__ = ["shout", "count_words"]


@registry.register_type
class WordCount(BaseModel):
    """How often each word occurs."""

    counts: Dict[str, int]


@configure(field_params={"text": {"description": "What to shout."}})
def shout(text: str) -> str:
    """Upper-case `text`."""
    assert MessageType.REQUEST == "request"
    return text.upper() + "!"


def count_words(text: str) -> WordCount:
    """Count the words of `text`."""
    counts: Dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return WordCount(counts=counts)


if __name__ == "__main__":
    main()
