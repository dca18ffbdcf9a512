"""Energy meters behind one interface (``METERS`` registry), one module per meter.

Each meter reports joules over an inference window and labels them ``measured:<meter>``
or ``estimated:<profile>``. :func:`auto_meter` picks the best meter that works here
(Jetson rails, RAPL, INA260/INA219 on I²C, pyRAPL) and falls back to the estimator.

Example:
    >>> from edge_runtime.meters import create_meter
    >>> meter = create_meter("estimate", profile="rpi4")
    >>> meter.source
    'estimated:rpi4'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.meters.base import Meter, SampledMeter, attribute
from edge_runtime.registry import Registry

METERS: Registry[type[Meter]] = Registry("energy meter")
METERS.register_lazy("estimate", "edge_runtime.meters.estimate:EstimateMeter")
METERS.register_lazy("powercap", "edge_runtime.meters.powercap:PowercapMeter")
METERS.register_lazy("pyrapl", "edge_runtime.meters.pyrapl:PyRAPLMeter")
METERS.register_lazy("jetson", "edge_runtime.meters.jetson:JetsonMeter")
METERS.register_lazy("ina219", "edge_runtime.meters.ina219:INA219Meter")
METERS.register_lazy("ina260", "edge_runtime.meters.ina260:INA260Meter")
METERS.register_lazy("powerlog", "edge_runtime.meters.powerlog:PowerLogMeter")


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text, 0) if conv is int else conv(text)  # int(.., 0) accepts 0x40
        except ValueError:
            pass
    return text


def parse_meter_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"ina219:bus=1,address=0x40,shunt_ohms=0.1"`` -> ``("ina219", {...})``.

    Raises:
        ConfigError: an option is not ``key=value``.
    """
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"meter spec {spec!r}: expected name:key=value,key=value; bad item {item!r}")
        kwargs[key.strip()] = _value(val.strip())
    return name.strip(), kwargs


def create_meter(spec: str | Meter, *, profile: Any = None, **kwargs: Any) -> Meter:
    """Build a meter from a name or ``name:key=value,...`` spec; ``auto`` picks the best available.

    ``profile`` is passed to the estimator (and ignored by measuring meters).
    """
    if isinstance(spec, Meter):
        return spec
    name, opts = parse_meter_spec(spec)
    opts.update(kwargs)
    if name == "auto":
        return auto_meter(profile=profile, **opts)
    cls = METERS.get(name)
    if not cls.measured:
        opts.setdefault("profile", profile)
    try:
        return cls(**opts)
    except TypeError as exc:
        raise ConfigError(f"meter {name!r}: bad option ({exc})") from None


@dataclass(frozen=True)
class MeterStatus:
    """Whether a meter can work on this machine, and why (not)."""

    name: str
    available: bool
    reason: str
    measured: bool
    auto_priority: int | None


def meter_status(options: dict[str, dict[str, Any]] | None = None) -> list[MeterStatus]:
    """Probe every registered meter (``options``: per-meter probe kwargs, e.g. a test's sysfs root)."""
    options = options or {}
    out = []
    for name in METERS.names():
        try:
            cls = METERS.get(name)
        except EdgeRuntimeError as exc:
            out.append(MeterStatus(name, False, str(exc), True, None))
            continue
        try:
            ok, why = cls.probe(**options.get(name, {}))
        except Exception as exc:  # a probe must never crash the listing
            ok, why = False, f"probe failed: {exc}"
        out.append(MeterStatus(name, ok, why, cls.measured, cls.auto_priority))
    return out


def auto_meter(*, profile: Any = None, options: dict[str, dict[str, Any]] | None = None,
               **_: Any) -> Meter:
    """The best measuring meter that works here (by ``auto_priority``), else the estimator."""
    options = options or {}
    ranked = sorted((s for s in meter_status(options) if s.available and s.auto_priority is not None),
                    key=lambda s: s.auto_priority)  # type: ignore[arg-type, return-value]
    for status in ranked:
        cls = METERS.get(status.name)
        kw = dict(options.get(status.name, {}))
        if not cls.measured:
            kw.setdefault("profile", profile)
        try:
            return cls(**kw)
        except EdgeRuntimeError:
            continue
    return METERS.create("estimate", profile=profile)


__all__ = ["METERS", "Meter", "SampledMeter", "MeterStatus", "attribute", "auto_meter", "create_meter",
           "meter_status", "parse_meter_spec"]
