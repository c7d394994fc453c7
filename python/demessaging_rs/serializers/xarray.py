"""Put :class:`xarray.Dataset` and :class:`xarray.DataArray` objects on the wire.

The wire form is the object written as a netCDF3 classic file (xarray's ``scipy`` writer), base64
encoded and given as text. It is the form the reference ``demessaging`` package uses, so a value
encoded here can be read by a reference backend or client, and the other way round.
:mod:`demessaging_rs.validators.xarray` reads it back.
"""

from __future__ import annotations

from base64 import b64encode
from typing import Union

try:
    import xarray as xr
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "demessaging_rs.serializers.xarray needs xarray (and scipy to write netCDF); "
        "install them with: pip install 'demessaging-rs[xarray]'"
    ) from _err

__all__ = ["encode_xarray"]


def encode_xarray(obj: Union[xr.DataArray, xr.Dataset]) -> str:
    """Serialize a DataArray or Dataset to base64 text of its netCDF3 classic bytes.

    Use it as the ``serializers`` entry of an argument or as the ``return_serializer`` of a function
    configured with :func:`demessaging_rs.configure`. To turn the text back into an object::

        from base64 import b64decode
        import xarray as xr

        ds = xr.open_dataset(b64decode(text))      # a Dataset
        da = xr.open_dataarray(b64decode(text))    # a DataArray

    or let :func:`demessaging_rs.validators.xarray.validate_dataset` /
    :func:`~demessaging_rs.validators.xarray.validate_dataarray` do it.

    Parameters
    ----------
    obj: xarray.DataArray or xarray.Dataset
        What to serialize. netCDF3 classic limits apply (e.g. no 64-bit integers, no groups).

    Returns
    -------
    str
        The netCDF bytes, base64 encoded, as an ASCII string.
    """
    data = obj.to_netcdf(format="NETCDF3_CLASSIC")
    return b64encode(data).decode("utf-8")
