"""A DASF backend package written for the reference (it imports `demessaging`); demessaging-rs runs it
unchanged with `demessaging-rs run -m zeroedit_pkg.backend ...` (tests/test_zero_edit.py)."""
