"""Import every module of the installed demessaging_rs (used by `nox -s wheel` on a bare wheel install).

Modules that need an optional extra must fail with an ImportError naming it when the extra is absent."""

import importlib
import importlib.util
import pkgutil
import sys
import warnings

import demessaging_rs

OPTIONAL = {"xarray": ("demessaging_rs.serializers.xarray", "demessaging_rs.validators.xarray", "demessaging_rs.NetCDFDecoder")}

names = sorted(m.name for m in pkgutil.walk_packages(demessaging_rs.__path__, "demessaging_rs."))
failed = []
for name in names:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated modules warn, as the reference's
        try:
            importlib.import_module(name)
        except ImportError as e:
            extra = next((x for x, mods in OPTIONAL.items() if name in mods), None)
            if extra is None or importlib.util.find_spec(extra) is not None or f"demessaging-rs[{extra}]" not in str(e):
                failed.append(f"{name}: {e}")
print(f"imported {len(names) - len(failed)} of {len(names)} modules from {demessaging_rs.__file__}")
if failed:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(1)
