"""Turn wire values back into :class:`xarray.Dataset` and :class:`xarray.DataArray` objects.

Attach them to a function argument with :func:`demessaging_rs.configure` (together with the matching
serializer from :mod:`demessaging_rs.serializers.xarray`)::

    import xarray as xr

    from demessaging_rs import configure
    from demessaging_rs.serializers.xarray import encode_xarray
    from demessaging_rs.validators.xarray import validate_dataset

    @configure(
        serializers={"ds": encode_xarray},
        validators={"ds": [validate_dataset]},
        return_serializer=encode_xarray,
        return_validators=[validate_dataset],
    )
    def smooth(ds: xr.Dataset) -> xr.Dataset:
        ...

With a serializer *and* validators configured for an argument (or the return value), the wire value is
passed to the validators untouched and they build the object; the serializer writes it back as text.
"""

from __future__ import annotations

from base64 import b64decode
from typing import Any

try:
    import xarray as xr
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "demessaging_rs.validators.xarray needs xarray (and scipy to read netCDF); "
        "install them with: pip install 'demessaging-rs[xarray]'"
    ) from _err

__all__ = ["validate_dataarray", "validate_dataset"]


def validate_dataarray(cls: Any, v: Any) -> xr.DataArray:
    """Build a :class:`xarray.DataArray` from a wire value (a pydantic field validator).

    Accepted values of `v`:

    ``dict``
        a dictionary as written by :meth:`xarray.DataArray.to_dict`, read with
        :meth:`xarray.DataArray.from_dict`;
    ``str``
        base64 text of netCDF bytes, as written by
        :func:`demessaging_rs.serializers.xarray.encode_xarray`;
    ``bytes``
        netCDF bytes, opened with :func:`xarray.open_dataarray`;
    ``xarray.DataArray``
        returned as it is;
    anything else
        passed to the :class:`xarray.DataArray` constructor (a list, an array, ...).

    `cls` is the model class pydantic passes to field validators; it is not used.

    Raises
    ------
    ValueError
        When the value cannot be read (e.g. the bytes are not netCDF); inside a backend this becomes an
        ``error validating request: ...`` reply.
    """
    return _coerce(v, xr.DataArray, xr.open_dataarray)  # type: ignore[no-any-return]


def validate_dataset(cls: Any, v: Any) -> xr.Dataset:
    """Build a :class:`xarray.Dataset` from a wire value (a pydantic field validator).

    Accepted values of `v`:

    ``dict``
        a dictionary as written by :meth:`xarray.Dataset.to_dict`, read with
        :meth:`xarray.Dataset.from_dict`;
    ``str``
        base64 text of netCDF bytes, as written by
        :func:`demessaging_rs.serializers.xarray.encode_xarray`;
    ``bytes``
        netCDF bytes, opened with :func:`xarray.open_dataset`;
    ``xarray.Dataset``
        returned as it is (the reference hands it to the constructor, which recent xarray versions
        refuse; so a function returning a Dataset works here with any xarray);
    anything else
        passed to the :class:`xarray.Dataset` constructor (e.g. a mapping of variables).

    `cls` is the model class pydantic passes to field validators; it is not used.

    Raises
    ------
    ValueError
        When the value cannot be read (e.g. the bytes are not netCDF); inside a backend this becomes an
        ``error validating request: ...`` reply.
    """
    return _coerce(v, xr.Dataset, xr.open_dataset)  # type: ignore[no-any-return]


def _coerce(v: Any, kind: Any, open_netcdf: Any) -> Any:
    """`v` as an object of `kind` (DataArray or Dataset): kept, read from a dict, from base64 text or bytes of
    netCDF (with `open_netcdf`), or passed to the constructor."""
    if isinstance(v, kind):
        return v
    if isinstance(v, dict):
        return kind.from_dict(v)
    if isinstance(v, str):
        return open_netcdf(b64decode(v.encode("utf-8")))
    if isinstance(v, bytes):
        return open_netcdf(v)
    return kind(v)
