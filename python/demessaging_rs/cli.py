"""Command line: the per-module commands of ``main`` and the ``demessaging-rs`` console script."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, cast

import yaml

from demessaging_rs.config import LoggingConfig, ModuleConfig, PulsarConfig, WebsocketURLConfig
from demessaging_rs.utils import sigterm_as_interrupt

if TYPE_CHECKING:
    from pydantic import RootModel

UNKNOWN_TOPIC = "__NOTSET"
UNKNOWN_MODULE = "__NOTSET"

__all__ = ["get_parser", "console_main", "UNKNOWN_TOPIC", "UNKNOWN_MODULE"]


def split_namespace(ns: argparse.Namespace) -> Tuple[argparse.Namespace, Dict[str, argparse.Namespace]]:
    """Separate ``group.key`` attributes of a namespace into one namespace per group."""
    main: Dict[str, Any] = {}
    groups: Dict[str, Dict[str, Any]] = {}
    for key, value in vars(ns).items():
        if "." in key:
            group, sub = key.split(".", 1)
            groups.setdefault(group, {})[sub] = value
        else:
            main[key] = value
    return argparse.Namespace(**main), {g: argparse.Namespace(**kws) for g, kws in groups.items()}


class MessagingArgumentParser(argparse.ArgumentParser):
    """Argument parser that assembles ``messaging_config``, ``log_config`` and ``listen_config`` dicts."""

    # returns a new Namespace, not the (possibly other) type of `namespace`: hence the override ignore
    def parse_known_args(  # type: ignore[override]
        self, args: Optional[Iterable[str]] = None, namespace: Optional[argparse.Namespace] = None
    ) -> Tuple[argparse.Namespace, List[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        ns, groups = split_namespace(ns)
        if "messaging_config" in groups:
            ws = groups["websocketurl_config"]
            use_ws = bool(ws.websocket_url or (ws.producer_url and ws.consumer_url))
            chosen = ws if use_ws else groups["pulsar_config"]
            ns.messaging_config = dict(chain(vars(groups["messaging_config"]).items(), vars(chosen).items()))
        if "log_config" in groups:
            ns.log_config = vars(groups["log_config"])
        if "listen_config" in groups:
            ns.listen_config = vars(groups["listen_config"])
        return ns, rest


def _load_dict(value: str) -> Any:
    """A YAML string, or the path of a YAML/JSON file."""
    data = yaml.safe_load(value)
    if isinstance(data, str):
        with open(data) as f:
            if data.endswith((".yml", ".yaml")):
                return yaml.safe_load(f)
            if data.endswith(".json"):
                return json.load(f)
    return data


def get_parser(module_name: str = "__main__", config: Optional[ModuleConfig] = None) -> argparse.ArgumentParser:
    """The argument parser of a backend module's command line (same options as ``demessaging``)."""
    pulsar = PulsarConfig(topic=UNKNOWN_TOPIC)
    websocket = WebsocketURLConfig(topic=UNKNOWN_TOPIC)
    if config is None:
        config = ModuleConfig(messaging_config=pulsar)
    elif isinstance(config.messaging_config, PulsarConfig):
        pulsar = config.messaging_config
    else:
        websocket = config.messaging_config
    conf = config.model_dump()
    mc = config.messaging_config.model_dump()

    parser = MessagingArgumentParser(description=config.doc or None)
    conn = parser.add_argument_group("Connection options", "Options of the backend module and its connection.")
    pgroup = parser.add_argument_group(
        "Pulsar connection options", "Address of a broker speaking Pulsar's WebSocket API (the default)."
    )
    wgroup = parser.add_argument_group("Websocket URL group", "Address of a broker given by URL (dasf-broker-django).")
    lgroup = parser.add_argument_group("Logging Configuration group", "Logging options.")

    def helptext(name: str, model: Any = ModuleConfig, default: Any = None) -> str:
        info = model.model_fields[name]
        text = info.description or ""
        if default or info.default:
            text += " Default: %(default)s"
        return text

    topic_unknown = mc["topic"] == UNKNOWN_TOPIC
    conn.add_argument(
        "-t",
        "--topic",
        help=helptext("topic", PulsarConfig) + (" This option is required!" if topic_unknown else " Default: %(default)s"),
        required=topic_unknown,
        dest="messaging_config.topic",
        default=mc["topic"],
    )
    conn.add_argument(
        "--header",
        help=helptext("header", PulsarConfig),
        metavar='{"authorization": "Token ..."}',
        dest="messaging_config.header",
        default=mc["header"],
    )
    module_unknown = module_name == UNKNOWN_MODULE
    parser.add_argument(
        "-m",
        "--module",
        default=module_name,
        required=module_unknown,
        dest="module_name",
        help="Name of the backend module." + (" This option is required!" if module_unknown else " Default: %(default)s"),
    )
    parser.add_argument("-d", "--description", help=helptext("doc"), default=conf["doc"], dest="doc")
    parser.add_argument("--debug", help=helptext("debug"), action="store_true")

    for flags, name in ((("-H", "--host"), "host"), (("-p", "--port"), "port"), (("--persistent",), "persistent"),
                        (("--tenant",), "tenant"), (("--namespace",), "namespace")):
        default = mc.get(name, getattr(pulsar, name))
        pgroup.add_argument(*flags, help=helptext(name, PulsarConfig, default), default=default, dest=f"pulsar_config.{name}")

    pgroup.add_argument("--ssl", action="store_true", default=bool(mc.get("ssl", pulsar.ssl)),
                        help=helptext("ssl", PulsarConfig), dest="pulsar_config.ssl")
    conn.add_argument("--ssl-ca-file", default=mc.get("ssl_ca_file"), help=helptext("ssl_ca_file", PulsarConfig),
                      dest="messaging_config.ssl_ca_file")
    conn.add_argument("--ssl-insecure-no-verify", action="store_true",
                      default=bool(mc.get("ssl_insecure_no_verify", False)),
                      help=helptext("ssl_insecure_no_verify", PulsarConfig),
                      dest="messaging_config.ssl_insecure_no_verify")

    int_options = (
        ("--max-workers", "max_workers"),
        ("--queue_size", "queue_size"),
        ("--max_payload_size", "max_payload_size"),
        ("--max-reassembly-size", "max_reassembly_size"),
        ("--producer-keep-alive", "producer_keep_alive"),
        ("--producer-connection-timeout", "producer_connection_timeout"),
    )
    for flag, name in int_options:
        default = mc.get(name, getattr(pulsar, name))
        conn.add_argument(
            flag, help=helptext(name, PulsarConfig, default), default=default, type=int, dest=f"messaging_config.{name}"
        )
    for flag, name in (
        ("--call-timeout", "call_timeout"),
        ("--request-timeout", "request_timeout"),
        ("--drain-timeout", "drain_timeout"),
    ):
        default = mc.get(name, getattr(pulsar, name))
        conn.add_argument(
            flag, help=helptext(name, PulsarConfig, default), default=default, type=float, dest=f"messaging_config.{name}"
        )
    conn.add_argument(
        "--subscription-type",
        help=helptext("subscription_type", PulsarConfig),
        default=mc.get("subscription_type"),
        choices=["Exclusive", "Shared", "Failover"],
        dest="messaging_config.subscription_type",
    )
    conn.add_argument(
        "--subscription",
        help=helptext("subscription", PulsarConfig),
        default=mc.get("subscription"),
        dest="messaging_config.subscription",
    )

    ws_default = mc.get("websocket_url", websocket.websocket_url)
    wgroup.add_argument("--websocket-url", help=helptext("websocket_url", WebsocketURLConfig, ws_default),
                        default=ws_default, dest="websocketurl_config.websocket_url")
    wgroup.add_argument("--producer-url", help=helptext("producer_url", WebsocketURLConfig, ws_default),
                        default=mc.get("producer_url") or ws_default, dest="websocketurl_config.producer_url")
    wgroup.add_argument("--consumer-url", help=helptext("consumer_url", WebsocketURLConfig, ws_default),
                        default=mc.get("consumer_url") or ws_default, dest="websocketurl_config.consumer_url")

    parser.add_argument("--members", help=helptext("members"), nargs="+", metavar="member", default=conf["members"])

    log = LoggingConfig()
    lgroup.add_argument("--log-config", default=log.config_file, dest="log_config.config_file", type=Path,
                        help=helptext("config_file", LoggingConfig))
    lgroup.add_argument("--log-level", default=log.level, dest="log_config.level", type=int,
                        choices=[logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL],
                        help=helptext("level", LoggingConfig))
    lgroup.add_argument("--log-file", default=log.logfile, type=Path, dest="log_config.logfile",
                        help=helptext("logfile", LoggingConfig))
    lgroup.add_argument("--merge-log-config", action="store_true", dest="log_config.merge_config",
                        help=helptext("merge_config", LoggingConfig))
    lgroup.add_argument("--log-overrides", dest="log_config.config_overrides", type=_load_dict,
                        help="YAML text or a YAML/JSON file merged into the logging configuration.")

    sub = parser.add_subparsers(dest="command", title="Commands")
    sp = sub.add_parser("test-connect", help="Check that the message broker can be reached.")
    sp.set_defaults(method_name="test_connect")

    sp = sub.add_parser("listen", help="Serve requests from the message broker.")
    sp.add_argument("--dump-to", dest="listen_config.dump_to",
                    help="Also write each request as a JSON file into this directory.")
    sp.add_argument("--dump-tool", dest="listen_config.dump_tool",
                    help="Run this shell command for each request file; {} or {path}, {basename}, {directory} "
                         "are replaced by the file's location.")
    sp.add_argument("-c", "--cmd", dest="listen_config.cmd",
                    help="Compute the response with this shell command instead of in Python; {} (or {path}, "
                         "{basename}, {directory}) is replaced by the request file and its output must be the "
                         "response JSON.")

    sp = sub.add_parser("schema", help="Print the JSON schema of the backend module.")
    sp.add_argument("-i", "--indent", help="Indent the JSON dump.", type=int)
    sp.set_defaults(method_name="schema_json", command_params=["indent"])

    sp = sub.add_parser("send-request", help="Send one request through the message broker and print the result.")
    sp.add_argument("request", type=_load_dict, help="The request as YAML text, or the path of a YAML or JSON file.")
    # progress reports of the backend: a progress line on a terminal, log lines otherwise (both on stderr)
    sp.set_defaults(method_name="send_request", command_params=["request", "on_progress"], on_progress=ProgressPrinter())

    sp = sub.add_parser("compute", help="Run one request locally and print the result.")
    sp.add_argument("request", type=_load_dict, help="The request as YAML text, or the path of a YAML or JSON file.")
    sp.set_defaults(method_name="process_request", command_params=["request"])

    sub.add_parser("shell", help="Start an IPython shell with the model as `Model`.")

    sp = sub.add_parser("generate", help="Print a client stub module for this backend.")
    sp.add_argument("-l", "--line-length", default=79, type=int, help="Line length of the stub. Default: %(default)s")
    sp.add_argument("--no-formatters", action="store_false", dest="use_formatters",
                    help="Use none of isort, black and autoflake.")
    sp.add_argument("--no-isort", action="store_false", dest="use_isort", help="Do not run isort.")
    sp.add_argument("--no-black", action="store_false", dest="use_black", help="Do not run black.")
    sp.add_argument("--no-autoflake", action="store_false", dest="use_autoflake", help="Do not run autoflake.")
    sp.add_argument("--async", action="store_true", dest="use_async",
                    help="Generate `async def` functions and methods (await them in asyncio code).")
    sp.set_defaults(
        command_params=["line_length", "use_formatters", "use_autoflake", "use_black", "use_isort", "use_async"]
    )
    return parser


class ProgressPrinter:
    """Shows the progress reports of a call on stderr: one updating line on a terminal, log lines otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream
        self._open_line = False

    @staticmethod
    def describe(report: Any) -> Tuple[str, str, Optional[Tuple[int, int]]]:
        """``(status, text, (done, total) or None)`` of a deprogressapi report (or of anything else)."""
        status = str(getattr(getattr(report, "status", None), "value", getattr(report, "status", "")) or "")
        text = getattr(report, "step_message", None)
        if text is None:
            messages = getattr(report, "messages", None)
            text = messages[-1] if messages else ("" if hasattr(report, "report_id") else str(report))
        children = getattr(report, "children", None)
        counts = None
        if children is not None:
            total = max(int(getattr(report, "steps", 0) or 0), len(children))
            done = sum(1 for c in children if str(getattr(c.status, "value", c.status)) != "running")
            if total:
                counts = (done, total)
            running = [c for c in children if str(getattr(c.status, "value", c.status)) == "running"]
            if running:
                text = f"{text}: {running[-1].step_message}" if text else running[-1].step_message
        return status, str(text), counts

    def __call__(self, report: Any) -> None:
        stream = self.stream or sys.stderr
        status, text, counts = self.describe(report)
        if stream.isatty():
            bar = ""
            if counts:
                width = 24
                filled = int(width * counts[0] / counts[1])
                bar = f"[{'#' * filled}{'.' * (width - filled)}] {counts[0]}/{counts[1]} "
            stream.write(f"\r\x1b[2K{bar}{text} ({status})")
            self._open_line = status == "running"
            if not self._open_line:
                stream.write("\n")
            stream.flush()
        else:
            done = f" [{counts[0]}/{counts[1]}]" if counts else ""
            stream.write(f"progress ({status}){done}: {text}\n")
            stream.flush()


# --------------------------------------------------------------------------- console script
def _read_tokens(path: Optional[Path]) -> Optional[List[str]]:
    """The token file's lines, as they are (the broker skips comments and names bad lines by number)."""
    if path is None:
        return None
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SystemExit(f"error: cannot read the token file: {e}") from None
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
        raise SystemExit(f"error: {path} holds no token")
    return lines


def _broker(argv: List[str]) -> int:
    from demessaging_rs.broker import Broker

    p = argparse.ArgumentParser(prog="demessaging-rs broker", description="Run the embedded DASF message broker.")
    p.add_argument("-H", "--host", default="127.0.0.1", help="Address to listen on. Default: %(default)s")
    p.add_argument("-p", "--port", default=8080, type=int, help="Port to listen on (0: any free). Default: %(default)s")
    p.add_argument("--token-file", type=Path, help="Require one of the tokens in this file (one per line).")
    p.add_argument("--max-frame-size", type=int, help="Largest accepted frame in bytes. Default: 5 MiB")
    p.add_argument("--max-connections", type=int, help="Maximum simultaneous connections. Default: 10000")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="Worker threads of the broker. Default: half the CPUs (%(default)s)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve wss:// only (needs --tls-key).")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert.")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    _console_logging()
    try:
        broker = Broker(
            host=args.host,
            port=args.port,
            max_frame_size=args.max_frame_size,
            max_connections=args.max_connections,
            tokens=_read_tokens(args.token_file),
            threads=args.threads,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (OSError, ValueError) as e:
        where = f"{args.token_file}: " if args.token_file and "tokens:" in str(e) else ""
        print(f"error: {where}{e}", file=sys.stderr)
        return 1
    try:
        with sigterm_as_interrupt():
            # announced inside the try: a signal right after the line (seen on a loaded CI machine) still
            # ends in a clean stop, not in an uncaught KeyboardInterrupt
            print(f"demessaging-rs broker listening on {broker.url}", flush=True)
            broker.serve_forever()
    except KeyboardInterrupt:
        broker.stop()
    print("broker stopped", flush=True)
    return 0


def _demo(argv: List[str]) -> int:
    import threading

    from demessaging_rs import BackendModule
    from demessaging_rs.broker import Broker

    p = argparse.ArgumentParser(prog="demessaging-rs demo", description="Broker, backend and client in one process.")
    p.add_argument("--calls", type=int, default=200, help="Calls to time after the first. Default: %(default)s")
    args = p.parse_args(argv)

    def hello_world(name: str = "World") -> str:
        """Greet someone."""
        return f"Hello, {name}!"

    with Broker(port=0) as broker:
        print(f"broker:  {broker.url}")
        mc = {"topic": "demo-hello-world", "host": broker.host, "port": str(broker.port), "call_timeout": 30.0}
        model = BackendModule.create_model(members=[hello_world], messaging_config=mc)
        backend = model._backend()
        thread = threading.Thread(target=backend.run, name="demo-backend", daemon=True)
        thread.start()
        producer = model.backend_config.messaging_config.producer
        deadline = time.monotonic() + 20
        while not producer.ping(timeout=0.5):
            if time.monotonic() > deadline:
                print("error: the backend did not come up", file=sys.stderr)
                return 1
        print("backend: hello_world(name: str) on topic demo-hello-world")
        t0 = time.perf_counter()
        answer = model.send_request({"func_name": "hello_world", "name": "DASF"})
        first = time.perf_counter() - t0
        value = cast("RootModel[Any]", answer).root  # send_request gives the return model, a RootModel
        print(f"call:    hello_world(name='DASF') -> {value!r}  ({first * 1000:.2f} ms round trip)")
        times = []
        for _ in range(max(args.calls, 0)):
            t0 = time.perf_counter()
            model.send_request({"func_name": "hello_world", "name": "DASF"})
            times.append(time.perf_counter() - t0)
        if times:
            times.sort()
            print(f"timing:  {len(times)} more calls, p50 {times[len(times) // 2] * 1000:.3f} ms")
        backend.stop()
        thread.join(timeout=10)
        producer.disconnect()
    return 0


RUN_USAGE = """usage: demessaging-rs run -m MODULE [ARGS ...]
       demessaging-rs run SCRIPT.py [ARGS ...]

Zero-edit mode: run a module (like `python -m MODULE`) or a script (like `python SCRIPT.py`) written for
demessaging, unchanged, on demessaging-rs: within this process every `import demessaging...` gives the
matching `demessaging_rs...` module. ARGS are the program's own, e.g. `-t my-topic listen` for a backend."""


def _run(argv: List[str]) -> int:
    import importlib.util
    import runpy

    from demessaging_rs import _compat

    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print(RUN_USAGE, file=sys.stderr if not argv or argv[0] == "-m" else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    _compat.enable_zero_edit()
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        missing: Optional[ImportError]
        sys.path.insert(0, os.getcwd())
        try:
            found = importlib.util.find_spec(module)
        except ImportError as e:  # a parent package is missing
            found, missing = None, e
        else:
            missing = None
        if found is None:
            print(f"demessaging-rs run: no module named {module!r}" + (f" ({missing})" if missing else ""), file=sys.stderr)
            return 2
        sys.argv = [found.origin or module, *args]
        runner: Callable[[], Any] = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script, args = argv[0], argv[1:]
        if not Path(script).is_file():
            print(f"demessaging-rs run: no such file {script!r}", file=sys.stderr)
            return 2
        sys.argv = [script, *args]
        sys.path.insert(0, str(Path(script).resolve().parent))
        runner = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
    try:
        runner()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0


def _console_logging() -> None:
    LoggingConfig().configure_logging()


def console_main(argv: Optional[List[str]] = None) -> int:
    """``demessaging-rs broker|demo|<module commands>``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "broker":
        return _broker(argv[1:])
    if argv and argv[0] == "demo":
        return _demo(argv[1:])
    if argv and argv[0] == "run":
        return _run(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: demessaging-rs broker [options]   run the embedded message broker\n"
            "       demessaging-rs demo               broker + backend + one call, in one process\n"
            "       demessaging-rs run -m MODULE|SCRIPT [args]  run code written for demessaging, unchanged\n"
            "       demessaging-rs -m MODULE [options] COMMAND   the commands of a backend module\n"
            "                                         (listen, schema, generate, send-request, ...)"
        )
        return 0
    from demessaging_rs import main

    sys.path.insert(0, ".")
    main(UNKNOWN_MODULE, *argv)
    return 0
