"""The scenarios of the reference's own tests (test_backend_module, test_backend_function,
test_backend_class_, test_config of demessaging 0.6.4), run against demessaging_rs.

The backends and helper types live in tests/backends/scenario_*.py. In-process scenarios build the
models directly; the CLI scenarios run the backend scripts through our embedded broker.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import docstring_parser
import pytest
from pydantic import ValidationError

from conftest import BACKENDS, Backends, reference_copy, reference_python, wait_for_pong
from demessaging_rs import backend, config
from demessaging_rs.backend.function import get_return_model
from demessaging_rs.config import ModuleConfig
from demessaging_rs.config.messaging import BaseMessagingConfig, PulsarConfig, WebsocketURLConfig
from demessaging_rs.messaging.constants import MessageType, PropertyKeys

MODULE = BACKENDS / "scenario_module.py"
ALL_FUNCTIONS = ["func_arbitrary_model", "func_basic", "func_arbitrary_type"]
NEVER_SERVED = ["FuncPrivateFunc", "FuncUnlistedFunc", "MethClassClassPrivateMethod"]


@pytest.fixture(autouse=True)
def scenario_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario backends and their helper types import by name, as a user's module would."""
    monkeypatch.syspath_prepend(str(BACKENDS))


@pytest.fixture
def sm() -> Any:
    return importlib.import_module("scenario_module")


@pytest.fixture
def sf() -> Any:
    return importlib.import_module("scenario_functions")


@pytest.fixture
def st() -> Any:
    return importlib.import_module("scenario_types")


@pytest.fixture
def pristine() -> Iterator[Callable[[Any], Any]]:
    """Hand out a function or class whose ``configure`` settings are dropped again after the test."""
    touched: List[Any] = []

    def use(obj: Any) -> Any:
        touched.append(obj)
        return obj

    yield use
    for obj in touched:
        if "__pulsar_config__" in vars(obj):
            delattr(obj, "__pulsar_config__")


@pytest.fixture
def import_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """Write generated code to a fresh module in tmp_path and import it."""
    names: List[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(code: str) -> Any:
        name = f"generated_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(code, "utf-8")
        names.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield load
    for name in names:
        sys.modules.pop(name, None)


def module_model(module: str = "scenario_module", **kws: Any) -> Any:
    kws.setdefault("messaging_config", dict(topic="test"))
    return backend.BackendModule.create_model(module, **kws)


def doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip()


def schemas(Model: Any, via: str) -> tuple:
    """(rpc schema, return schema) of a function model, from the model or from its API info."""
    if via == "api_info":
        info = Model.get_api_info()
        assert isinstance(info, backend.FunctionAPIModel)
        return info.rpc_schema, info.return_schema
    return Model.model_json_schema(), Model.return_model.model_json_schema()


# --------------------------------------------------------------------------------------------- module
MEMBERS = {
    "all": lambda sm: None,
    "name": lambda sm: ["func_basic"],
    "function": lambda sm: [sm.func_basic],
    "function-model": lambda sm: [backend.BackendFunction.create_model(sm.func_basic)],
}


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_module_members(sm, kind):
    """__all__ by default; otherwise members by name, as functions or as function models."""
    members = MEMBERS[kind](sm)
    Model = module_model(**({"members": members} if members else {}))
    for schema in (Model.model_json_schema(), Model.get_api_info().rpc_schema):
        defs = schema["$defs"]
        assert "FuncFuncBasic" in defs
        assert ("ClassClass" in defs) is (kind == "all")
        assert ("MethClassClassAdd2a" in defs) is (kind == "all")
        assert not set(NEVER_SERVED) & set(defs)
    info = Model.get_api_info()
    assert isinstance(info, backend.ModuleAPIModel)
    assert [f.name for f in info.functions] == (ALL_FUNCTIONS if kind == "all" else ["func_basic"])
    assert [c.name for c in info.classes] == (["Class"] if kind == "all" else [])


def test_a_module_without_all_serves_its_public_functions_imported_ones_too(tmp_path, monkeypatch):
    """As the reference: every public function in the namespace, so a backend that re-exports helpers
    keeps serving them; private names, classes and this package's own functions (main) are not served."""
    (tmp_path / "noall_helpers.py").write_text('def compute(x: int) -> int:\n    """Double it."""\n    return 2 * x\n')
    (tmp_path / "noall_backend.py").write_text(
        "from noall_helpers import compute\n"
        "from demessaging_rs import main, configure\n\n"
        "def hello(name: str) -> str:\n    return 'hi ' + name\n\n"
        "def _hidden() -> int:\n    return 1\n\n"
        "class Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    Model = module_model("noall_backend")
    assert [f.name for f in Model.get_api_info().functions] == ["compute", "hello"]
    assert Model.get_api_info().classes == []
    assert Model.model_validate({"func_name": "compute", "x": 4}).root().root == 8


def test_main_moves_deprecated_messaging_keywords_header_too():
    """main(host=..., header=...) warns and moves them to messaging_config, as the reference does."""
    with pytest.warns(DeprecationWarning) as record:
        Model = backend.main("scenario_module", "-t", "deprecated-kws", header={"authorization": "Token abc"},
                             port=8123)
    assert sorted(str(w.message).split(" parameter")[0] for w in record) == ["The header", "The port"]
    mc = Model.backend_config.messaging_config
    assert (mc.header, mc.port, mc.topic) == ({"authorization": "Token abc"}, "8123", "deprecated-kws")


def test_a_parameter_documented_in_the_class_and_in_init_takes_the_class_docstring():
    class Calc:
        """A calculator.

        Parameters
        ----------
        base : int
            the class-doc base
        """

        def __init__(self, base: int, scale: int = 1):
            """Make one.

            Parameters
            ----------
            base : int
                the init-doc base
            scale : int
                the scale
            """

        def add(self, x: int) -> int:
            return x

    props = backend.BackendClass.create_model(Calc).model_json_schema()["properties"]
    assert (props["base"]["description"], props["scale"]["description"]) == ("the class-doc base", "the scale")


def test_module_json_schema_extra():
    Model = module_model(json_schema_extra={"testModuleExtra": {"testModule": "attribute"}})
    assert Model.model_json_schema()["testModuleExtra"] == {"testModule": "attribute"}


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({"func_name": "func_basic", "a": 1}, lambda st: [1]),
        ({"class_name": "Class", "a": 2, "function": {"func_name": "add2a", "c": 2}}, lambda st: 4),
        ({"class_name": "Class", "a": 2, "b": 5, "function": {"func_name": "sum"}}, lambda st: 7),
        ({"func_name": "func_arbitrary_type", "a": 1}, lambda st: st.ArbitraryType(2)),
        ({"func_name": "func_arbitrary_model", "a": {"value": 3}}, lambda st: st.ArbitraryTestModel(value=6)),
    ],
    ids=["function", "method", "method-no-args", "arbitrary-type", "arbitrary-model"],
)
def test_module_parse_and_call(st, request_, expected):
    assert module_model().model_validate(request_)().root == expected(st)


def test_module_rejects_private_and_unlisted_members():
    Model = module_model()
    for request_ in (
        {"func_name": "_private_func", "a": 1},
        {"func_name": "unlisted_func", "a": 1},
        {"class_name": "Class", "a": 1, "function": {"func_name": "_private_method"}},
    ):
        with pytest.raises(ValidationError):
            Model.model_validate(request_)


@pytest.mark.parametrize("as_file", [True, False], ids=["file", "dict"])
def test_module_process_request(tmp_path, as_file):
    Model = module_model()
    request_ = {"func_name": "func_basic", "a": 1}
    if as_file:
        path = tmp_path / "request.json"
        path.write_text(json.dumps(request_))
        with path.open() as f:
            assert Model.process_request(f).root == [1]
    else:
        assert Model.process_request(request_).root == [1]


def test_module_render(sm, import_code):
    """The rendered client module keeps the docs and signatures of the backend's members."""
    mod = import_code(module_model().backend_config.render())
    assert doc(mod.Class) == doc(sm.Class)
    assert doc(mod.Class.__init__) == doc(sm.Class.__init__)
    assert callable(mod.Class.sum)
    assert list(inspect.signature(mod.Class.sum).parameters) == list(inspect.signature(sm.Class.sum).parameters)
    assert list(inspect.signature(mod.Class.add2a).parameters) == ["self", "c"]
    for name in ALL_FUNCTIONS:
        assert doc(getattr(mod, name)) == doc(getattr(sm, name))
    assert mod.__all__ == [*ALL_FUNCTIONS, "Class"]
    assert not hasattr(mod, "_private_func") and not hasattr(mod.Class, "_private_method")


def test_module_generate_with_registered_type(st, import_code):
    """Registered types are copied into the stub; imports of the module come along, also guarded ones."""
    mod = import_code(module_model("scenario_with_type").generate())
    assert mod.MyType(a=1).add2a(1) == 2
    assert callable(mod.describe)
    assert inspect.signature(mod.double).parameters["a"].annotation is st.ArbitraryTestModel


# ------------------------------------------------------------------------------------------- functions
@pytest.mark.parametrize("via", ["model", "api_info"])
def test_function_missing_doc(sf, via):
    schema, return_schema = schemas(backend.BackendFunction.create_model(sf.func_missing_doc), via)
    assert "description" not in schema
    assert "description" not in schema["properties"]["a"]
    assert return_schema["type"] == "integer"
    assert "description" not in return_schema


@pytest.mark.parametrize("via", ["model", "api_info"])
def test_function_missing_signatures_warn(sf, via):
    with pytest.warns(RuntimeWarning, match="Missing return signature for func_missing_sig"):
        with pytest.warns(RuntimeWarning, match="Missing signature for a"):
            Model = backend.BackendFunction.create_model(sf.func_missing_sig)
    schema, return_schema = schemas(Model, via)
    assert "type" not in schema["properties"]["a"]
    assert schema["properties"]["a"]["description"] == "An integer"
    assert "type" not in return_schema
    assert return_schema["default"] is None
    assert return_schema["description"] == "An integer"


@pytest.mark.parametrize("via", ["model", "api_info"])
def test_function_arbitrary_type_schema(sf, via):
    schema, return_schema = schemas(backend.BackendFunction.create_model(sf.func_arbitrary_types), via)
    assert "type" not in schema["properties"]["a"]
    assert "type" not in return_schema


@pytest.mark.parametrize("via", ["model", "api_info"])
def test_function_arbitrary_model_schema(sf, via):
    schema, return_schema = schemas(backend.BackendFunction.create_model(sf.func_arbitrary_model), via)
    assert "ArbitraryTestModel" in schema["$defs"]
    assert schema["properties"]["a"]["$ref"].endswith("ArbitraryTestModel")
    assert "ArbitraryTestModel" in return_schema["$defs"]
    ref = return_schema["allOf"][0]["$ref"] if "allOf" in return_schema else return_schema["$ref"]
    assert ref.endswith("ArbitraryTestModel")


VALID = {"a": 1}
INVALID = {"a": "one"}
VALID_MODEL = {"a": {"value": 1}}


@pytest.mark.parametrize(
    "name, obj, valid",
    [
        ("func_sig", VALID, True),
        ("func_sig", INVALID, False),
        ("func_json_schema_extra", VALID, True),
        ("func_json_schema_extra", INVALID, False),
        ("func_missing_doc", VALID, True),
        ("func_missing_doc", INVALID, False),
        ("func_missing_sig", VALID, True),
        ("func_missing_sig", INVALID, True),  # nothing to validate against
        ("func_arbitrary_types", VALID, True),
        ("func_arbitrary_types", INVALID, False),
        ("func_arbitrary_model", VALID_MODEL, True),
        ("func_arbitrary_model", INVALID, False),
    ],
)
@pytest.mark.filterwarnings("ignore:Missing signature:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Missing return signature:RuntimeWarning")
def test_function_request(sf, name, obj, valid):
    Model = backend.BackendFunction.create_model(getattr(sf, name))
    request_ = {**obj, "func_name": name}
    if valid:
        Model.model_validate(request_)
    else:
        with pytest.raises(ValidationError):
            Model.model_validate(request_)


def test_function_json_schema_extra(sf):
    schema = backend.BackendFunction.create_model(sf.func_json_schema_extra).model_json_schema()
    assert schema["testFunctionExtra"] == {"testFunction": "attribute"}


@pytest.mark.parametrize("func_name", ["func_sig123", None], ids=["wrong", "missing"])
def test_function_name_must_match(sf, func_name):
    Model = backend.BackendFunction.create_model(sf.func_sig)
    request_ = dict(VALID, **({"func_name": func_name} if func_name else {}))
    with pytest.raises(ValidationError):
        Model.model_validate(request_)


def test_function_call_converts_arbitrary_type(sf, st):
    Model = backend.BackendFunction.create_model(sf.func_arbitrary_types)
    ret = Model.model_validate({**VALID, "func_name": "func_arbitrary_types"})()
    assert isinstance(ret.root, st.ArbitraryType)
    assert ret.root.a == 1
    assert ret.model_dump_json() == "1"


def test_function_call_returns_list(sf):
    Model = backend.BackendFunction.create_model(sf.func_sig)
    assert Model.model_validate({**VALID, "func_name": "func_sig"})().root == [1]


def test_function_call_validates_the_return_value(sf):
    Model = backend.BackendFunction.create_model(sf.func_invalid_sig)
    model = Model.model_validate({**VALID, "func_name": "func_invalid_sig"})
    with pytest.raises(ValidationError):
        model()


def test_function_render(sf, import_code):
    code = backend.BackendFunction.create_model(sf.func_sig).backend_config.render()
    mod = import_code("from __future__ import annotations\n" + code)
    assert doc(mod.func_sig) == doc(sf.func_sig)
    assert list(inspect.signature(mod.func_sig).parameters) == ["a"]


def test_get_return_model(sf):
    """The public builder of return models, with the reference's signature."""
    assert list(inspect.signature(get_return_model).parameters) == ["docstring", "config"]
    Model = backend.BackendFunction.create_model(sf.func_sig)
    ret = get_return_model(docstring_parser.parse(sf.func_sig.__doc__), Model.backend_config)
    assert ret.model_json_schema() == Model.return_model.model_json_schema()
    assert ret.model_validate([2]).root == [2]

    def two_returns(a: int) -> int:
        """Two things.

        Returns
        -------
        int
            the first
        int
            the second
        """
        return a

    Model = backend.BackendFunction.create_model(two_returns)
    ret = get_return_model(docstring_parser.parse(two_returns.__doc__), Model.backend_config)
    assert ret.model_json_schema()["description"] == "- the first\n- the second"


# --------------------------------------------------------------------------------------------- classes
@pytest.mark.parametrize("via", ["model", "api_info"])
def test_class_definition(sm, via):
    Model = backend.BackendClass.create_model(sm.Class)
    if via == "api_info":
        info = Model.get_api_info()
        assert isinstance(info, backend.ClassAPIModel)
        schema, methods = info.rpc_schema, {m.name for m in info.methods}
    else:
        schema, methods = Model.model_json_schema(), set(Model.backend_config.models)
        assert "MethClassClassAdd2a" in schema["$defs"]
    assert schema["title"] == "ClassClass"
    assert schema["properties"]["a"]["description"] == "first integer"
    assert schema["properties"]["b"]["description"] == "second integer, by default 1"
    assert methods == {"add2a", "add2b", "sum"}


def test_class_json_schema_extra(sf):
    schema = backend.BackendClass.create_model(sf.ClassJsonSchemaExtra).model_json_schema()
    assert schema["testClassExtra"] == {"testClass": "attribute"}


def test_method_json_schema_extra(sf):
    Model = backend.BackendClass.create_model(sf.ClassMethodJsonSchemaExtra)
    schema = Model.backend_config.models["add2a"].model_json_schema()
    assert schema["testMethodExtra"] == {"testMethod": "attribute"}


def test_class_private_method_excluded(sm):
    Model = backend.BackendClass.create_model(sm.Class)
    assert "_private_method" not in Model.backend_config.models
    assert "MethClassClassPrivateMethod" not in Model.model_json_schema()["$defs"]


@pytest.mark.parametrize("func_name, valid", [("add2a", True), ("asd", False), ("_private_method", False)])
def test_class_method_request(sm, func_name, valid):
    Model = backend.BackendClass.create_model(sm.Class)
    request_ = {"class_name": "Class", "a": 2, "function": {"func_name": func_name, "c": 2}}
    if valid:
        assert Model.model_validate(request_)().root == 4
    else:
        with pytest.raises(ValidationError):
            Model.model_validate(request_)


@pytest.mark.parametrize("kind", ["name", "function", "function-model"])
def test_class_explicit_methods(sm, kind):
    method = {
        "name": lambda: "add2a",
        "function": lambda: sm.Class.add2a,
        "function-model": lambda: backend.BackendFunction.create_model(sm.Class.add2a),
    }[kind]()
    Model = backend.BackendClass.create_model(sm.Class, methods=[method])
    assert list(Model.backend_config.models) == ["add2a"]


def test_class_render(sm, import_code):
    code = backend.BackendClass.create_model(sm.Class).backend_config.render()
    mod = import_code("from __future__ import annotations\n" + code)
    assert doc(mod.Class) == doc(sm.Class)
    assert doc(mod.Class.__init__) == doc(sm.Class.__init__)
    assert callable(mod.Class.sum)
    assert list(inspect.signature(mod.Class.sum).parameters) == list(inspect.signature(sm.Class.sum).parameters)


# ---------------------------------------------------------------------------------------------- config
GT0 = {"a": {"gt": 0}}
LT1 = {"a": {"lt": 1}}


@pytest.mark.parametrize("target", ["function", "class"])
@pytest.mark.parametrize("layers", [[GT0], [GT0, LT1]], ids=["once", "merged"])
def test_configure_field_params(sf, sm, pristine, target, layers):
    obj = pristine(sf.func_sig if target == "function" else sm.Class)
    for field_params in layers:
        config.configure(field_params=field_params)(obj)
    create = backend.BackendFunction.create_model if target == "function" else backend.BackendClass.create_model
    a = create(obj).model_json_schema()["properties"]["a"]
    assert a["exclusiveMinimum"] == 0
    assert ("exclusiveMaximum" in a) is (len(layers) == 2)
    if len(layers) == 2:
        assert a["exclusiveMaximum"] == 1


@pytest.mark.parametrize("merged", [False, True])
def test_configure_method(sm, merged):
    if merged:

        class TestClass(sm.Class):
            @config.configure(field_params=LT1)
            @config.configure(field_params=GT0)
            def test_method(self, a: int) -> int:
                return a

    else:

        class TestClass(sm.Class):  # type: ignore[no-redef]
            @config.configure(field_params=GT0)
            def test_method(self, a: int) -> int:
                return a

    schema = backend.BackendClass.create_model(TestClass).model_json_schema()
    a = schema["$defs"]["MethClassTestClassTestMethod"]["properties"]["a"]
    assert a["exclusiveMinimum"] == 0
    assert ("exclusiveMaximum" in a) is merged
    assert "MethClassTestClassAdd2a" in schema["$defs"]  # inherited methods are served too


def test_configure_from_json(sf, pristine):
    func = pristine(sf.func_sig)
    config.configure('{"field_params": {"a": {"gt": 0}}}')(func)
    a = backend.BackendFunction.create_model(func).model_json_schema()["properties"]["a"]
    assert a["exclusiveMinimum"] == 0
    with pytest.raises(ValueError, match="not both"):
        config.configure('{"field_params": {}}', field_params={})(func)


# ---------------------------------------------------------------------------- messaging configuration
def test_pulsar_config_from_env_file(tmp_path, monkeypatch):
    env = tmp_path / "backend.env"
    env.write_text('DE_BACKEND_TOPIC=from-file\nDE_BACKEND_HOST=broker.example\nDE_BACKEND_PORT=1234\n'
                   'DE_BACKEND_HEADER={"authorization": "Token abc"}\nDE_BACKEND_MAX_WORKERS=3\n')
    for var in ("DE_BACKEND_TOPIC", "DE_BACKEND_HOST", "DE_BACKEND_PORT", "DE_BACKEND_HEADER"):
        monkeypatch.delenv(var, raising=False)
    c = PulsarConfig(_env_file=env)
    assert (c.topic, c.host, c.port, c.max_workers) == ("from-file", "broker.example", "1234", 3)
    assert c.header == {"authorization": "Token abc"}
    # keyword arguments beat the environment, which beats the file
    monkeypatch.setenv("DE_BACKEND_HOST", "from-env")
    c = PulsarConfig(topic="given", _env_file=str(env))
    assert (c.topic, c.host, c.port) == ("given", "from-env", "1234")
    assert ModuleConfig(messaging_config=c).messaging_config.host == "from-env"


def test_base_and_websocket_config_from_env_file(tmp_path, monkeypatch):
    for var in ("DE_BACKEND_TOPIC", "DE_BACKEND_WEBSOCKET_URL"):
        monkeypatch.delenv(var, raising=False)
    env = tmp_path / "base.env"
    env.write_text("DE_BACKEND_TOPIC=base-topic\nDE_BACKEND_MAX_PAYLOAD_SIZE=1000\n")
    c = BaseMessagingConfig(_env_file=env)
    assert (c.topic, c.max_payload_size) == ("base-topic", 1000)
    ws = tmp_path / "ws.env"
    ws.write_text("DE_BACKEND_TOPIC=ws-topic\nDE_BACKEND_WEBSOCKET_URL=ws://127.0.0.1:1/ws\n")
    w = WebsocketURLConfig(_env_file=ws)
    assert (w.topic, w.websocket_url) == ("ws-topic", "ws://127.0.0.1:1/ws")
    # as in the reference, a prefixed setting the class does not know is an error
    with pytest.raises(ValidationError, match="de_backend_websocket_url"):
        PulsarConfig(_env_file=ws)


@pytest.mark.parametrize(
    "given, kind",
    [
        (lambda: PulsarConfig(topic="t", host="h", port="1"), PulsarConfig),
        (lambda: WebsocketURLConfig(topic="t", websocket_url="ws://h:1/ws"), WebsocketURLConfig),
        (lambda: {"topic": "t", "host": "h", "port": "1"}, PulsarConfig),
        (lambda: {"topic": "t", "websocket_url": "ws://h:1/ws"}, WebsocketURLConfig),
    ],
    ids=["pulsar-instance", "websocket-instance", "pulsar-dict", "websocket-dict"],
)
def test_module_config_messaging_config(sm, given, kind):
    value = given()
    mc = ModuleConfig(messaging_config=value).messaging_config
    assert type(mc) is kind
    assert isinstance(value, dict) or mc is value  # an instance is kept as it is
    expected = value if isinstance(value, dict) else value.model_dump(exclude_unset=True)
    assert {k: v for k, v in mc.model_dump().items() if k in expected} == expected
    Model = backend.BackendModule.create_model(members=[sm.func_basic], config=ModuleConfig(messaging_config=value))
    assert type(Model.backend_config.messaging_config) is kind
    Model = backend.BackendModule.create_model(members=[sm.func_basic], messaging_config=value)
    assert Model.backend_config.messaging_config.topic == "t"


# ------------------------------------------------------------------------------ command line + broker
def cli(broker, topic: str, script: Path = MODULE) -> List[str]:
    return [sys.executable, str(script), "-H", "127.0.0.1", "-p", str(broker.port), "-t", topic]


def run(cmd: List[str], cwd: Optional[Path] = None, timeout: float = 60) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(cwd or BACKENDS))
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def listen(backends: Backends, script: Path, topic: str, *listen_args: str) -> subprocess.Popen:
    """Like ``backends.start``, with options of the ``listen`` command (they follow the command name)."""
    log = open(backends.tmp_path / f"{script.stem}-{topic}.log", "w")
    proc = subprocess.Popen(
        [*cli(backends.broker, topic, script), "listen", *listen_args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(script.parent),
    )
    backends.procs.append(proc)  # stopped by the fixture's teardown
    try:
        wait_for_pong(backends.broker, topic, proc)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- backend log ---\n{Path(log.name).read_text()}") from None
    return proc


def request_file(tmp_path: Path, request_: Dict[str, Any]) -> Path:
    path = tmp_path / f"request-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(request_))
    return path


def test_cli_test_connect(broker):
    run([*cli(broker, "scenario-connect"), "test-connect"])


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({"func_name": "func_basic", "a": 1}, [1]),
        ({"func_name": "func_arbitrary_type", "a": 1}, 2),
        ({"func_name": "func_arbitrary_model", "a": {"value": 2}}, {"value": 4}),
        ({"class_name": "Class", "a": 1, "b": 1, "function": {"func_name": "add2b", "c": 5}}, 6),
    ],
    ids=["basic", "arbitrary-type", "arbitrary-model", "class"],
)
def test_cli_send_request(broker, backends, tmp_path, request_, expected):
    """send-request with the request as a file and as a JSON argument."""
    backends.start(MODULE, "scenario-send")
    for arg in (str(request_file(tmp_path, request_)), json.dumps(request_)):
        out = run([*cli(broker, "scenario-send"), "send-request", arg])
        assert json.loads(out.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("option", ["--dump-to", "--dump-tool"])
def test_cli_listen_dumps_requests(broker, backends, tmp_path, option):
    dump = tmp_path / "dump"
    dump.mkdir()
    arg = str(dump) if option == "--dump-to" else f"cp {{}} {dump}/{{basename}}"
    listen(backends, MODULE, "scenario-dump", option, arg)
    request_ = {"func_name": "func_basic", "a": 1}  # complete: the backend dumps the request as sent
    out = run([*cli(broker, "scenario-dump"), "send-request", str(request_file(tmp_path, request_))])
    assert out.strip().splitlines()[-1] == "[1]"
    files = list(dump.iterdir())
    assert len(files) == 1
    assert json.loads(files[0].read_text()) == request_


def test_cli_listen_cmd(broker, backends, tmp_path):
    listen(backends, MODULE, "scenario-cmd", "--cmd", 'echo "[500]"')
    path = request_file(tmp_path, {"func_name": "func_basic", "a": 1})
    out = run([*cli(broker, "scenario-cmd"), "send-request", str(path)])
    assert "[500]" in out.splitlines()


@pytest.mark.parametrize("as_file", [True, False], ids=["file", "json"])
def test_cli_compute(broker, tmp_path, as_file):
    request_ = {"func_name": "func_basic", "a": 1}
    arg = str(request_file(tmp_path, request_)) if as_file else json.dumps(request_)
    assert run([*cli(broker, "scenario-compute"), "compute", arg]).strip() == "[1]"


STUB_CALLS = {
    "scenario_module": """
import scenario_module as ref
assert stub.func_basic(1) == ref.func_basic(1) == [1]
assert stub.Class(1).add2a(2) == ref.Class(1).add2a(2) == 3
assert stub.Class(1, 4).sum() == 5
assert stub.func_arbitrary_model({"value": 3}).value == 6
assert stub.func_arbitrary_type(4).a == 5
""",
    "scenario_basemodel": """
assert hasattr(stub, "Measurement")
assert stub.total([dict(value=2)]) == 2
assert stub.Accumulator([dict(value=2)]).add(dict(value=2)) == 4
assert stub.Accumulator([stub.Measurement(value=1)]).add(stub.Measurement(value=2)) == 3
""",
}


@pytest.mark.parametrize("module", sorted(STUB_CALLS))
def test_cli_generate_and_call(broker, backends, tmp_path, module):
    """``generate`` writes a client module; importing it and calling its members reaches the backend."""
    script = BACKENDS / f"{module}.py"
    topic = f"{module}-stub"
    (tmp_path / "stub.py").write_text(run([*cli(broker, topic, script), "generate"]))
    backends.start(script, topic)
    caller = tmp_path / "call_stub.py"
    header = f"import sys\nsys.path.append({str(BACKENDS)!r})\nimport stub\n"
    caller.write_text(header + STUB_CALLS[module] + "\nprint('OK')\n")
    assert run([sys.executable, str(caller)], cwd=tmp_path).strip().splitlines()[-1] == "OK"


def _api_info_model(broker, topic: str) -> Any:
    url = f"ws://127.0.0.1:{broker.port}/ws"
    return module_model(members=["func_basic"], messaging_config=dict(topic=topic, websocket_url=url))


def _check_full_api(api_info: Any) -> None:
    defs = api_info.rpc_schema["$defs"]
    assert {"FuncFuncBasic", "ClassClass", "MethClassClassAdd2a"} <= set(defs)
    assert not set(NEVER_SERVED) & set(defs)
    assert [c.name for c in api_info.classes] == ["Class"]
    assert [f.name for f in api_info.functions] == ALL_FUNCTIONS


def test_api_info_request(broker, backends):
    """An api_info request describes the backend's whole API, whatever members the client model has."""
    backends.start(MODULE, "scenario-api-info")
    Model = _api_info_model(broker, "scenario-api-info")
    producer = Model.backend_config.messaging_config.producer
    try:
        status, _body, props = producer.call_raw("", message_type=MessageType.API_INFO.value, timeout=30)
    finally:
        producer.disconnect()
    assert status == "success"
    _check_full_api(backend.ModuleAPIModel.model_validate_json(props["api_info"]))


def test_api_info_request_the_reference_way(broker, backends):
    """The reference's spelling: ``backend.utils.run_async(producer.send_request, {...})``."""
    backends.start(MODULE, "scenario-api-info-ref")
    Model = _api_info_model(broker, "scenario-api-info-ref")
    producer = Model.backend_config.messaging_config.producer
    try:
        response = backend.utils.run_async(
            producer.send_request, {"properties": {PropertyKeys.MESSAGE_TYPE: MessageType.API_INFO}}
        )
    finally:
        producer.disconnect()
    _check_full_api(backend.ModuleAPIModel.model_validate_json(response["msg"]))


REFERENCE_API_INFO = """
import json, sys, warnings
warnings.simplefilter("ignore")
from demessaging import backend
from demessaging.messaging.constants import MessageType, PropertyKeys

def func_basic(a: int) -> int:
    return a

Model = backend.BackendModule.create_model(
    members=[func_basic], messaging_config=dict(topic=sys.argv[1], websocket_url=sys.argv[2])
)
producer = Model.backend_config.messaging_config.producer
print(json.dumps(backend.utils.run_async(
    producer.send_request, {"properties": {PropertyKeys.MESSAGE_TYPE: MessageType.API_INFO}}
), default=str))
"""


def test_api_info_request_from_the_reference_client(broker, backends, run_python, tmp_path):
    backends.start(MODULE, "scenario-api-info-refclient")
    script = tmp_path / "ref_api_info.py"
    script.write_text(REFERENCE_API_INFO)
    url = f"ws://127.0.0.1:{broker.port}/ws"
    out = run_python(str(script), "scenario-api-info-refclient", url, python=reference_python(), timeout=90)
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout.strip().splitlines()[-1])
    assert response.get("status") == "success", response
    _check_full_api(backend.ModuleAPIModel.model_validate_json(response["msg"]))


# ------------------------------------------------------------------------------- same as the reference
DUMP_SCRIPT = """
import json, sys, warnings
sys.path.insert(0, ".")
warnings.simplefilter("ignore")
backend = __import__(sys.argv[1] + ".backend", fromlist=["backend"])
import scenario_functions as sf
out = {}
for name in ("scenario_module", "scenario_basemodel", "scenario_with_type"):
    M = backend.BackendModule.create_model(name, messaging_config=dict(topic="same"))
    out[name] = [M.model_json_schema(), json.loads(M.get_api_info().model_dump_json())]
for name in ("func_sig", "func_json_schema_extra", "func_missing_doc", "func_missing_sig",
             "func_invalid_sig", "func_arbitrary_types", "func_arbitrary_model"):
    F = backend.BackendFunction.create_model(getattr(sf, name))
    out[name] = [F.model_json_schema(), json.loads(F.get_api_info().model_dump_json())]
for name in ("ClassJsonSchemaExtra", "ClassMethodJsonSchemaExtra"):
    C = backend.BackendClass.create_model(getattr(sf, name))
    out[name] = [C.model_json_schema(), json.loads(C.get_api_info().model_dump_json())]
print(json.dumps(out))
"""


def test_schemas_and_api_info_equal_the_reference(run_python, tmp_path):
    """Every scenario model has exactly the schema and API info the reference gives it."""
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for src in BACKENDS.glob("scenario_*.py"):
        reference_copy(src, ref_dir).rename(ref_dir / src.name)
    (tmp_path / "dump.py").write_text(DUMP_SCRIPT)
    ours = run_python(str(tmp_path / "dump.py"), "demessaging_rs", cwd=BACKENDS)
    assert ours.returncode == 0, ours.stderr
    ref = run_python(str(tmp_path / "dump.py"), "demessaging", cwd=ref_dir, python=reference_python(), timeout=120)
    assert ref.returncode == 0, ref.stderr
    ours_data, ref_data = json.loads(ours.stdout), json.loads(ref.stdout)
    assert ours_data.keys() == ref_data.keys()
    for key in ref_data:
        assert ours_data[key] == ref_data[key], key
