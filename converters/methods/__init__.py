"""Paper methods, one folder each (heads, losses, conversion stage, export of its parts); found by
:func:`converters.plugins.load_methods`."""
