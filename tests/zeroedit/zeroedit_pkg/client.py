"""A client script written for the reference: calls the backend on the topic/port given as arguments."""

import sys

import demessaging
from demessaging import BackendModule

from zeroedit_pkg.backend import count_words, shout

topic, port = sys.argv[1], sys.argv[2]
Model = BackendModule.create_model(
    members=[shout, count_words], messaging_config=dict(topic=topic, host="127.0.0.1", port=port)
)
print("MODULE", demessaging.__name__)
print("RESULT", Model.send_request({"func_name": "shout", "text": "hi"}).root)
print("COUNTS", Model.send_request({"func_name": "count_words", "text": "a b a"}).root.counts)
