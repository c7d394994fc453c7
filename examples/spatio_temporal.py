"""A backend function that takes and returns an xarray Dataset (needs ``pip install 'demessaging-rs[xarray]'``).

Datasets travel as base64 text of netCDF3 bytes, exactly as with the reference ``demessaging``:
``encode_xarray`` writes them (for the argument in the request and for the return value in the reply),
``validate_dataset`` reads them back (in the backend for the argument, in the client for the reply).

Serve it (with ``demessaging-rs broker --port 8080`` running)::

    cd examples
    python spatio_temporal.py listen

Call it from Python (in ``examples/`` too)::

    python -c 'import spatio_temporal as st; print(st.call_backend())'

or from the command line, with a request file holding an encoded sample dataset::

    python -c 'import spatio_temporal as st; st.write_request("request.json")'
    python spatio_temporal.py send-request request.json

``python spatio_temporal.py compute request.json`` runs the same request locally, without a broker.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from demessaging_rs import BackendModule, configure, main
from demessaging_rs.serializers.xarray import encode_xarray
from demessaging_rs.validators.xarray import validate_dataset

__all__ = ["temporal_anomaly"]

TOPIC = "spatio-temporal-topic"


@configure(
    serializers={"ds": encode_xarray},
    validators={"ds": [validate_dataset]},
    return_serializer=encode_xarray,
    return_validators=[validate_dataset],
)
def temporal_anomaly(ds: xr.Dataset, variable: str = "temperature") -> xr.Dataset:
    """Split a variable of a spatio-temporal dataset into its mean over time and the deviations from it.

    Parameters
    ----------
    ds: xarray.Dataset
        A dataset with a ``time`` dimension.
    variable: str
        The data variable of `ds` to analyse.

    Returns
    -------
    xarray.Dataset
        ``<variable>_mean`` (the time mean) and ``<variable>_anomaly`` (the data minus that mean), with the
        attributes of `ds`.
    """
    if variable not in ds.data_vars:
        present = ", ".join(repr(str(name)) for name in ds.data_vars) or "none"
        raise ValueError(f"the dataset has no variable {variable!r} (its variables: {present})")
    field = ds[variable]
    if "time" not in field.dims:
        raise ValueError(f"variable {variable!r} has no time dimension (its dimensions: {field.dims})")
    mean = field.mean("time", keep_attrs=True)
    anomaly = field - mean
    anomaly.attrs = dict(field.attrs)
    return xr.Dataset({f"{variable}_mean": mean, f"{variable}_anomaly": anomaly}, attrs=dict(ds.attrs))


def sample_dataset(times: int = 4, lats: int = 3, lons: int = 5) -> xr.Dataset:
    """A small, deterministic temperature cube (time, lat, lon) to try the backend with."""
    t = np.arange(times, dtype="f4")[:, None, None]
    y = np.arange(lats, dtype="f4")[None, :, None]
    x = np.arange(lons, dtype="f4")[None, None, :]
    data = 280.0 + 2.0 * np.sin(t) + 0.5 * y - 0.25 * x
    return xr.Dataset(
        {"temperature": (("time", "lat", "lon"), data.astype("f4"), {"units": "K"})},
        coords={
            "time": pd.date_range("2024-01-01", periods=times, freq="D"),
            "lat": np.linspace(50.0, 55.0, lats),
            "lon": np.linspace(5.0, 15.0, lons),
        },
        attrs={"title": "sample temperature cube"},
    )


def write_request(path: str = "request.json") -> None:
    """Write a request file for ``send-request`` / ``compute`` with an encoded sample dataset."""
    with open(path, "w") as f:
        json.dump({"func_name": "temporal_anomaly", "ds": encode_xarray(sample_dataset())}, f)


def call_backend(topic: str = TOPIC, **messaging: object) -> xr.Dataset:
    """Send the sample dataset to a running backend and return the Dataset it answers with."""
    model = BackendModule.create_model(members=[temporal_anomaly], messaging_config=dict(topic=topic, **messaging))
    return model.send_request({"func_name": "temporal_anomaly", "ds": sample_dataset()}).root


if __name__ == "__main__":
    main(messaging_config=dict(topic=TOPIC))
