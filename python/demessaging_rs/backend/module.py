"""The backend module: one pydantic root model over every function and class a module serves.

``BackendModule.create_model`` builds the model; ``listen`` serves it through the Rust core;
``send_request`` calls it through the Rust client.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import io
import json
import logging
import subprocess
import tempfile
import traceback
from importlib import import_module
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, Union, cast

import docstring_parser
from deprogressapi import BaseReport
from pydantic import BaseModel, Field, RootModel, ValidationError, create_model
from pydantic.json_schema import JsonSchemaValue

from demessaging_rs.backend import utils
from demessaging_rs.backend.class_ import BackendClass, ClassAPIModel
from demessaging_rs.backend.function import BackendFunction, FunctionAPIModel, PendingResult, ReturnModel
from demessaging_rs.config import ModuleConfig
from demessaging_rs.exceptions import ConfigurationError, DemessagingError, RemoteError
from demessaging_rs.messaging.constants import PropertyKeys, Status  # noqa: F401
from demessaging_rs.messaging.consumer import MessageConsumer  # noqa: F401
from demessaging_rs.utils import SchemaExtraMixin, append_parameter_docs, merge_config, sigterm_as_interrupt  # noqa: F401

if TYPE_CHECKING:
    from demessaging_rs._core import Responder

logger = logging.getLogger(__name__)

__all__ = ["BackendModuleConfig", "ModuleAPIModel", "BackendModule"]


@append_parameter_docs
class BackendModuleConfig(ModuleConfig):
    """Settings of a backend module, bound to its members."""

    models: List[Any] = Field(default_factory=list, description="The models of the module's members.")

    module: Any = Field(description="The imported backend module (or None).")

    class_name: str = Field(description="Name of the model class")


class ModuleAPIModel(BaseModel):
    """An model that represants the API of a backend module."""

    classes: List[ClassAPIModel] = Field(description="The RPC-enabled classes that this module contains.")

    functions: List[FunctionAPIModel] = Field(description="The RPC-enabled functions that this module contains.")

    rpc_schema: JsonSchemaValue = Field(description="The aggregated JSON schema for an RPC call to this module.")


ModuleMember = Union[Type[BackendFunction], Type[BackendClass], Callable[..., Any], str, Type[object]]

if TYPE_CHECKING:
    _RootModel = RootModel[Any]
else:
    _RootModel = RootModel  # not RootModel[Any]: that would be a parametrized subclass of RootModel


def _is_ours(obj: Any) -> bool:
    """Is `obj` defined by this package (or its `demessaging` stand-in for zero-edit mode)?"""
    top = (getattr(obj, "__module__", None) or "").split(".", 1)[0]
    return top in ("demessaging_rs", "demessaging")


def _optional_module(name: str) -> Any:
    """The module `name` of an optional dependency, or ``None`` when it is not installed (typed ``Any``: the
    module may be missing or lack type information)."""
    try:
        return import_module(name)
    except ImportError:
        return None


_ERROR = Status.ERROR.value

# NOTE: looked up per request model type: `getattr(member, "class_name", None)` on a function's model raises
# (and formats) an AttributeError inside pydantic, which cost the caller about 3.4 µs per call.
_CALL_TRAITS: Dict[Any, Tuple[str, bool]] = {}


def _call_traits(member: Any) -> Tuple[str, bool]:
    """The field that names a request (``class_name`` or ``func_name``) and whether it takes a report."""
    traits = _CALL_TRAITS.get(type(member))
    if traits is not None:
        return traits
    fields = type(member).model_fields if isinstance(member, BaseModel) else {}
    method = member.function if "function" in fields else None
    key = (type(member), type(method))
    traits = _CALL_TRAITS.get(key)
    if traits is None:
        label = "class_name" if "class_name" in fields else "func_name" if "func_name" in fields else ""
        reports = any(getattr(getattr(obj, "backend_config", None), "reporter_args", None) for obj in (member, method))
        traits = (label, reports)
        # a class's traits depend on the method called: those are kept per (class, method) only
        _CALL_TRAITS[key if method is not None else type(member)] = traits
    return traits


def show_report(report: Any) -> None:
    """Default handling of a progress report on the calling side, as the reference's client: submit it
    (deprogressapi shows it as configured by ``DASF_REPORT_SHOW_METHOD``), or complete it when it is done.
    A report that cannot be shown is logged; it never fails the call."""
    if not isinstance(report, BaseReport):
        logger.info("progress: %s", report)
        return
    try:
        if report.status != Status.RUNNING.value:
            report.complete(report.status)
        else:
            report.submit()
    except Exception:
        logger.warning("could not show progress report %s", report.report_id, exc_info=True)


def _member_model(member: Any, module: Any) -> Tuple[Any, Union[Type[BackendFunction], Type[BackendClass]]]:
    if isinstance(member, str):
        member = getattr(module, member)
    if inspect.isclass(member) and issubclass(member, BackendFunction):
        return member.backend_config.function, member
    if inspect.isclass(member) and issubclass(member, BackendClass):
        return member.backend_config.Class, member
    if inspect.isclass(member):
        return member, BackendClass.create_model(member)
    if callable(member):
        return member, BackendFunction.create_model(member)
    raise ValueError(f"Cannot transform {member} to a member model!")


@append_parameter_docs
class BackendModule(SchemaExtraMixin, _RootModel):
    """Base of the root model of a backend module; create subclasses with :meth:`create_model`."""

    backend_config: ClassVar[BackendModuleConfig]

    #: the consumer serving this module (set by :meth:`listen`), as in the reference
    pulsar: ClassVar["MessageConsumer"]

    root: Union[BackendFunction, BackendClass]

    def __call__(self) -> ReturnModel:
        return self.root()

    # ------------------------------------------------------------------ model
    @classmethod
    def create_model(
        cls,
        module_name: Optional[str] = None,
        members: Optional[List[ModuleMember]] = None,
        config: Optional[ModuleConfig] = None,
        class_name: Optional[str] = None,
        **config_kws: Any,
    ) -> Type["BackendModule"]:
        """Build the root model of a module from `module_name` and/or a list of `members`."""
        module = import_module(module_name) if module_name is not None else None
        if members is None and module is None:
            raise ValueError("Either members or module need to be provided!")
        if config and config_kws:
            raise ValueError("Either config or config_kws can be used!")
        if config_kws:
            config = ModuleConfig(**config_kws)
        elif config is None and module is not None and hasattr(module, "backend_config"):
            config = module.backend_config
        if config is None:
            raise ValueError("No configuration given: pass config, config keywords or define backend_config")

        class_name = class_name or module_name or config.messaging_config.topic
        bound = BackendModuleConfig(module=module, class_name=class_name, **config.model_copy().model_dump())

        members = list(members or bound.members)
        if not members and module is not None:
            if hasattr(module, "__all__"):
                members = list(module.__all__)
            else:
                # every public function in the module's namespace, imported ones too (a backend may
                # re-export helpers), as the reference; but not this package's own (main, configure)
                members = [
                    obj
                    for name, obj in inspect.getmembers(module, inspect.isfunction)
                    if not name.startswith("_") and not _is_ours(obj)
                ]
        if not members:
            raise ConfigurationError(
                f"Found no members for the given module {module_name}! Define __all__, public functions, "
                "or pass members."
            )

        pairs = [_member_model(m, module) for m in members]
        bound.members = [obj for obj, _ in pairs]
        bound.models = [model for _, model in pairs]
        if not bound.doc and module is not None:
            bound.doc = utils.get_desc(docstring_parser.parse(module.__doc__ or ""))

        union: Any = bound.models[0]
        for m in bound.models[1:]:
            union = Union[union, m]
        extra = {"__module__": module_name} if module_name else {}
        model: Type[BackendModule] = create_model(  # type: ignore[call-overload]
            class_name, __base__=cls, root=(union, Field(description="The member to call.")), **extra
        )
        model.model_config["title"] = bound.messaging_config.topic
        model.backend_config = bound
        bound.log_config.configure_logging()
        if module is not None:
            bound.imports += "\n" + utils.get_module_imports(module)
        model.__doc__ = bound.doc
        return model


    @classmethod
    def schema_json(cls, indent: Optional[int] = None) -> str:  # type: ignore[override]
        """The module's JSON schema as text (what ``schema`` prints)."""
        return json.dumps(cls.model_json_schema(), indent=indent)

    @classmethod
    def get_api_info(cls) -> ModuleAPIModel:
        """The module's API: its classes, functions and the aggregated schema."""
        models = cls.backend_config.models
        return ModuleAPIModel(
            classes=[m.get_api_info() for m in models if issubclass(m, BackendClass)],
            functions=[m.get_api_info() for m in models if issubclass(m, BackendFunction)],
            rpc_schema=cls.model_json_schema(),
        )

    # ---------------------------------------------------------------- serving
    @classmethod
    def _consumer(cls) -> "MessageConsumer":
        """The consumer that serves this module (also ``cls.pulsar``); requests take the fast path."""
        cls.pulsar = MessageConsumer(
            cls.backend_config.messaging_config,
            handle_request=cls.handle_message,
            module_info=cls.model_json_schema(),
            api_info=cls.get_api_info(),
            payload_handler=cls._handle_payload,
        )
        return cls.pulsar

    @classmethod
    def _backend(cls) -> Any:
        """The core's backend object of a fresh consumer (``run()``/``stop()``)."""
        return cls._consumer().subscription

    @classmethod
    def listen(cls) -> None:
        """Serve requests until Ctrl-C or SIGTERM; running requests finish before it returns."""
        consumer = cls._consumer()
        backend = consumer.subscription
        assert backend is not None  # set by the consumer's constructor
        logger.info(
            "serving topic %s with %d workers (queue %d)",
            cls.backend_config.messaging_config.topic,
            backend.max_workers,
            backend.queue_size,
        )
        try:
            with sigterm_as_interrupt():
                consumer.wait_for_request()
        except KeyboardInterrupt:
            logger.info("stopped")
        except DemessagingError as e:
            # e.g. the broker refused the subscription (401, 409): nothing a retry would fix
            logger.error("cannot serve topic %s: %s", cls.backend_config.messaging_config.topic, e)
            raise SystemExit(1) from None

    @classmethod
    def test_connect(cls) -> None:
        """Connect to the broker once and report whether it works."""
        producer = cls.backend_config.messaging_config.producer
        producer.connect()
        logger.info("connection to the message broker works")

    @classmethod
    def _handle_payload(cls, payload: str, responder: "Responder") -> Optional[Tuple[bool, Union[str, bytes]]]:
        """Run one request (called by a Rust worker thread with the GIL held): ``(True, reply JSON)`` or
        ``(False, error text)``, or None when an ``async def`` member answers later."""
        debug = cls.backend_config.debug

        def failure(header: str, e: BaseException) -> Tuple[bool, str]:
            # the traceback goes to the log always, to the caller only with debug (as the reference)
            logger.error("Failed processing request %s", responder.message_id, exc_info=True)
            return False, f"{header}: {traceback.format_exc() if debug else e}"

        try:
            model = cls.__pydantic_validator__.validate_json(payload)
        except ValidationError as e:
            return failure("error validating request", e)
        except Exception as e:
            return failure("error processing request", e)
        try:
            result = cls._run_model(model, payload, responder)
            if isinstance(result, PendingResult):
                cls._answer_later(result, responder)
                return None
            # the JSON bytes as pydantic wrote them: no decode into a str (a copy of the whole reply)
            return True, result.__pydantic_serializer__.to_json(result)
        except Exception as e:
            return failure("error executing request", e)

    @classmethod
    def _answer_later(cls, pending: PendingResult, responder: "Responder") -> None:
        """Run an ``async def`` member on the backend's event loop; its reply goes out when it finishes."""

        async def reply_text() -> str:
            return (await pending.resolve()).model_dump_json()

        def done(ok: bool, text: str) -> None:
            status = Status.SUCCESS.value if ok else Status.ERROR.value
            responder.send("response", text, status=status, wait=False)

        try:
            cls.pulsar.event_loop.submit(reply_text, done)
        except BaseException:
            pending.close()
            raise

    @classmethod
    def _run_model(cls, model: "BackendModule", payload: str, responder: "Responder") -> ReturnModel:
        listen = cls.backend_config.listen_config
        if not (listen.dump_to or listen.dump_tool or listen.cmd):
            return cls._process_model(model, responder)
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        name = f"{utils.slugify(dt.datetime.now().isoformat())}_{utils.slugify(responder.message_id)}_{digest}.json"
        if listen.dump_to:
            (Path(listen.dump_to) / name).write_text(payload)
        if not (listen.dump_tool or listen.cmd):
            return cls._process_model(model, responder)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            target.write_text(payload)
            if listen.dump_tool:
                subprocess.check_output(cls._format_cmd(listen.dump_tool, target), stderr=subprocess.STDOUT, shell=True)
            if listen.cmd:
                out = subprocess.check_output(cls._format_cmd(listen.cmd, target), stderr=subprocess.STDOUT, shell=True)
                return model.root.return_model.model_validate_json(out.decode("utf-8"))  # type: ignore[return-value]
            return cls._process_model(model, responder)

    @staticmethod
    def _format_cmd(template: str, target: Path) -> str:
        return template.format(str(target), path=str(target), basename=target.name, directory=target.parent)

    @classmethod
    def _process_model(cls, model: "BackendModule", responder: "Responder") -> ReturnModel:
        member = model.root
        reporter_args = member.backend_config.reporter_args
        if not reporter_args:
            return model()
        reports = [r for r in (getattr(member, key, None) for key in reporter_args) if isinstance(r, BaseReport)]
        if not reports:
            return model()
        # deprogressapi reports submit through `report._pulsar.send_response(request=report._request, ...)`
        consumer = cls.pulsar
        msg = consumer.request_message(responder)
        with consumer.handling(msg, responder):
            for report in reports:
                # with the reference installed, deprogressapi types this as its PulsarMessageConsumer
                report._pulsar = consumer  # type: ignore[assignment, unused-ignore]
                report._request = msg
            result = model()
        if isinstance(result, PendingResult):
            inner = result.awaitable

            async def reporting() -> Any:
                with consumer.handling(msg, responder):
                    return await inner

            result.awaitable = reporting()
        return result

    @classmethod
    def handle_message(cls, request_msg: Dict[str, Any]) -> None:
        """Handle one request message (``messageId``, base64 ``payload``, ``properties``) and answer it
        through ``cls.pulsar``, as the reference does. :meth:`listen` takes a faster path to the same code."""
        consumer = cls.pulsar
        with consumer._lock:
            call = consumer._calls.get(request_msg.get("messageId", ""))
        if call is None:
            raise ValueError(f"request {request_msg.get('messageId')!r} is not being handled by {consumer!r}")
        try:
            payload = base64.b64decode(request_msg["payload"], validate=True).decode("utf-8")
        except Exception as e:
            consumer.send_error(request_msg, f"error processing request: {e}")
            return
        outcome = cls._handle_payload(payload, call.responder)
        if outcome is None:  # an async member: it answers when it finishes
            call.answered = True
            return
        ok, text = outcome
        if ok:
            consumer.send_response(request_msg, text, response_properties={"status": Status.SUCCESS})
        else:
            consumer.send_error(request_msg, text if isinstance(text, str) else text.decode("utf-8", "replace"))

    # ----------------------------------------------------------------- calling
    @classmethod
    def _validated(cls, request: Union["BackendModule", IO[Any], Dict[str, Any]]) -> "BackendModule":
        if isinstance(request, io.IOBase):
            return cls.model_validate_json("\n".join(cast("IO[str]", request).readlines()))  # a text stream
        if hasattr(request, "root"):
            return cls.model_validate(cast(BackendModule, request).root)
        return cls.model_validate(request)

    @classmethod
    def _call_args(
        cls, request: Union["BackendModule", IO[Any], Dict[str, Any]]
    ) -> Tuple[Any, str, bytes, bool]:
        """The validated request's member, the call's label, its JSON and whether it takes a report."""
        # NOTE: pydantic's validator and serializer straight, without model_validate/model_dump_json around
        # them (what those add for default arguments is about 0.6 µs per call)
        if type(request) is dict:
            model = cls.__pydantic_validator__.validate_python(request)
        else:
            model = cls._validated(request)
        member = model.root
        field, reports = _call_traits(member)
        label = (getattr(member, field) if field else None) or "request"
        return member, str(label), model.__pydantic_serializer__.to_json(model), reports

    @staticmethod
    def _result(member: Any, status: str, payload: bytes) -> BaseModel:
        if status == _ERROR:
            text = payload.decode("utf-8", "replace")
            logger.error("request failed: %s", text)
            raise RemoteError(text)
        result: BaseModel = member.return_model.__pydantic_validator__.validate_json(payload)
        return result

    @classmethod
    def send_request(
        cls,
        request: Union["BackendModule", IO[Any], Dict[str, Any]],
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[Any], Any]] = None,
    ) -> BaseModel:
        """Send `request` to the backend and return its validated return model.

        Raises :class:`~demessaging_rs.exceptions.CallTimeout` (a ``TimeoutError``) after `timeout` seconds
        (default: ``messaging_config.call_timeout``) and
        :class:`~demessaging_rs.exceptions.RemoteError` (a ``ValueError``) when the backend answers with an error.
        Progress reports the backend sends while it works are passed, in order and before the result, to
        `on_progress` as deprogressapi reports (see :func:`~demessaging_rs.messaging.producer.decode_progress`).
        """
        member, label, body, reports = cls._call_args(request)
        client, call_timeout = cls._core_client()
        progress = None
        if on_progress is None and reports:
            on_progress = show_report  # what the reference's client does with them
        if on_progress is not None:
            from demessaging_rs.messaging.producer import decode_progress

            def progress(payload: bytes, _props: Dict[str, str]) -> None:
                on_progress(decode_progress(payload))

        limit = call_timeout if timeout is None else float(timeout)
        status, payload, _ = client.call("request", body, limit, label, progress, False)
        return cls._result(member, status, payload)

    @classmethod
    async def asend_request(
        cls, request: Union["BackendModule", IO[Any], Dict[str, Any]], timeout: Optional[float] = None
    ) -> BaseModel:
        """Awaitable :meth:`send_request` for asyncio code: many calls may be in flight on one loop.

        Cancelling the awaiting task forgets the call; errors and timeouts as in :meth:`send_request`
        (progress reports are not delivered to asyncio callers)."""
        member, label, body, _ = cls._call_args(request)
        client, call_timeout = cls._core_client()
        limit = call_timeout if timeout is None else float(timeout)
        # NOTE: awaits the core's future directly (no coroutine layer of MessageProducer in between), and
        # without the reply's properties (no dict per call)
        status, payload, _ = await client.call_async("request", body, limit, label, False)
        return cls._result(member, status, payload)

    @classmethod
    def _core_client(cls) -> Tuple[Any, float]:
        """The core client of this module's producer (looked up once per class) and the call timeout."""
        mc = cls.backend_config.messaging_config
        cached = cls.__dict__.get("_dasf_core_client")
        if cached is None or cached[0] is not mc:
            cached = (mc, mc.producer._client)
            type.__setattr__(cls, "_dasf_core_client", cached)
        return cached[1], float(mc.call_timeout)

    def compute(self) -> BaseModel:
        """Send this request to the backend and return the result."""
        return self.send_request(self)

    async def acompute(self) -> BaseModel:
        """Awaitable :meth:`compute`."""
        return await self.asend_request(self)

    @classmethod
    def process_request(cls, request: Union["BackendModule", IO[Any], Dict[str, Any]]) -> ReturnModel:
        """Run `request` locally, without the broker (an ``async def`` member on an event loop of its own)."""
        result = cls._validated(request)()
        if isinstance(result, PendingResult):
            return cast(ReturnModel, utils.run_async(result.resolve))
        return result

    @classmethod
    def shell(cls) -> None:
        """Start an IPython shell with the model available as ``Model``."""
        # imported by name: an optional dependency, without (or with untyped) type information
        import_module("IPython").start_ipython(argv=[], user_ns={"Model": cls})

    @classmethod
    def generate(
        cls,
        line_length: int = 79,
        use_formatters: bool = True,
        use_autoflake: bool = True,
        use_black: bool = True,
        use_isort: bool = True,
        use_async: bool = False,
    ) -> str:
        """Render a client stub module for this backend (formatted when black/isort/autoflake are installed).

        With `use_async`, the stub's functions and methods are ``async def`` and await the backend."""
        import sys

        module = cls.backend_config.module
        future = utils.get_future_imports(module) if module is not None else ""
        code = cls.backend_config.render(use_async=use_async, future_imports=future)
        if use_formatters:
            missing = []
            isort = _optional_module("isort")
            if isort is None:
                use_isort = False
                missing.append("isort")
            black = _optional_module("black")
            if black is None:
                use_black = False
                missing.append("black")
            autoflake = _optional_module("autoflake")
            if autoflake is None:
                use_autoflake = False
                missing.append("autoflake")
            if missing:
                print(f"note: {', '.join(missing)} not installed; the stub is left unformatted", file=sys.stderr)
            if use_isort:
                code = isort.code(code, float_to_top=True, profile="black")
            if use_black:
                code = black.format_str(code, mode=black.Mode(line_length=line_length))
            if use_autoflake:
                code = autoflake.fix_code(code, remove_all_unused_imports=True)
            if use_isort:
                code = isort.code(code, float_to_top=True, profile="black")
        module = cls.backend_config.module
        if module is not None:
            code = code.replace(module.__name__ + ".", "")
        return code.strip() + "\n"


ModuleConfig.model_rebuild()
