"""Ready-made JSON serializers for argument and return types of backend functions.

Each submodule covers one optional third-party library and needs that library installed
(e.g. :mod:`demessaging_rs.serializers.xarray` needs the ``demessaging-rs[xarray]`` extra).
"""
