"""Build an :class:`xarray.Dataset` from the JSON coverage format of DASF web frontends.

The JSON document looks like this (``data`` is base64 of little-endian float32 values, row by row)::

    {
      "crs": "EPSG:4326",
      "extent": [lon_min, lat_a, lon_max, lat_b],
      "parameters": [
        {
          "name": "temperature",
          "fill": null,
          "coverages": [
            {"date": "2024-01-01T00:00:00.000Z",
             "dimension": {"width": 4, "height": 3, "inverted": false},
             "data": "<base64>"},
            ...
          ]
        }
      ]
    }

Every parameter becomes a ``(time, lat, lon)`` variable; one coverage is one time step.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import struct
from typing import Any, Dict, List

try:
    import numpy as np
    import xarray as xr
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "demessaging_rs.NetCDFDecoder needs xarray; install it with: pip install 'demessaging-rs[xarray]'"
    ) from _err

__all__ = ["decode_b64_data", "decode"]

#: how coverage dates are written
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def decode_b64_data(data: str) -> List[float]:
    """The float values in base64 text of packed little-endian float32 numbers, as a list of floats.

    Raises :class:`struct.error` when the decoded byte count is not a multiple of four.
    """
    raw = base64.b64decode(data)
    return [value for (value,) in struct.iter_unpack("<f", raw)]


def _axes(extent: List[float], dimension: Dict[str, Any]) -> "tuple[np.ndarray, np.ndarray]":
    """Longitudes and latitudes of a ``width`` x ``height`` grid spanning `extent` (both ends included).

    Rows run from the extent's second latitude (index 3) to its first (index 1), unless the coverage says
    its y axis is ``inverted``: then they run from index 1 to index 3.
    """
    width, height = dimension["width"], dimension["height"]
    first, last = (extent[1], extent[3]) if dimension["inverted"] else (extent[3], extent[1])
    lons = np.linspace(extent[0], extent[2], num=width, endpoint=True)
    lats = np.linspace(first, last, num=height, endpoint=True)
    return lons, lats


def decode(netcdfObject: str) -> xr.Dataset:
    """Turn the JSON text of a coverage document into a Dataset.

    Parameters
    ----------
    netcdfObject: str
        The JSON document (see the module documentation).

    Returns
    -------
    xarray.Dataset
        One ``(time, lat, lon)`` float variable per parameter, named after it, with attribute
        ``_FillValue`` (the parameter's ``fill``, NaN when null); the dataset's attribute ``crs`` is the
        document's ``crs``. The grid comes from each parameter's first coverage and the ``extent``.
    """
    document = json.loads(netcdfObject)
    extent = document["extent"]

    # the grid of the latest parameter with coverages; a parameter without any reuses it
    lons = np.array([], dtype=float)
    lats = np.array([], dtype=float)
    variables: Dict[str, xr.DataArray] = {}
    for parameter in document["parameters"]:
        coverages = parameter["coverages"]
        times: List[dt.datetime] = []
        values: List[float] = []
        width = height = 0
        for coverage in coverages:
            values.extend(decode_b64_data(coverage["data"]))
            if width < 1 or height < 1:  # the first coverage with a grid sets it
                width = coverage["dimension"]["width"]
                height = coverage["dimension"]["height"]
                lons, lats = _axes(extent, coverage["dimension"])
            times.append(dt.datetime.strptime(coverage["date"], DATE_FORMAT))

        cube = np.asarray(values, dtype=float).reshape((len(times), height, width))
        fill = parameter["fill"]
        variables[parameter["name"]] = xr.DataArray(
            data=cube,
            dims=["time", "lat", "lon"],
            coords={"time": times, "lat": lats, "lon": lons},
            attrs={"_FillValue": math.nan if fill is None else fill},
        )
    return xr.Dataset(variables, attrs={"crs": document["crs"]})
