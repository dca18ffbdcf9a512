import pytest

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.registry import Registry, UnknownNameError


def test_register_get_and_names():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    reg.register("b", int)
    assert reg.get("a") is A
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "c" not in reg
    assert reg.create("b", "7") == 7


def test_duplicate_name_raises():
    reg = Registry("widget")
    reg.register("a", int)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", float)


def test_unknown_name_lists_known():
    reg = Registry("widget")
    reg.register("x", int)
    reg.register("y", int)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'z'; known: x, y"):
        reg.get("z")


def test_lazy_entry_imported_on_first_use():
    reg = Registry("thing")
    reg.register_lazy("dec", "decimal:Decimal")
    import decimal

    assert reg.get("dec") is decimal.Decimal


def test_lazy_entry_missing_package_is_a_project_error():
    reg = Registry("backend")
    reg.register_lazy("nope", "no_such_package_xyz:Thing")
    with pytest.raises(EdgeRuntimeError, match="backend 'nope' needs a package that is not installed"):
        reg.get("nope")
