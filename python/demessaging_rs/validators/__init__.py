"""Ready-made pydantic validators that turn wire values back into rich Python objects.

They are the counterparts of :mod:`demessaging_rs.serializers`; each submodule covers one
optional third-party library (e.g. :mod:`demessaging_rs.validators.xarray` needs the
``demessaging-rs[xarray]`` extra).
"""
