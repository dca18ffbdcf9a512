"""The conversion pipeline: ``convert`` (recipe -> verified, calibrated bundle), the ``demo``, and the
workstation commands and bench rows the device-side CLI finds through entry points (``setup.cfg``)."""
