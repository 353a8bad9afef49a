"""MindSpore's argument checks (server/common/check_type.py) with its texts, the servable name from
the call stack (register/utils.py) and the deprecation notice (server/common/decorator.py)."""
import inspect
import os
import sys


def servable_name():
    """The folder of the first servable_config.py on the call stack, as MindSpore finds it."""
    for frame in inspect.stack():
        if frame.filename.endswith("servable_config.py"):
            return os.path.basename(os.path.dirname(os.path.realpath(frame.filename)))
    raise RuntimeError("Failed to obtain the directory of servable_config.py")


def check_str(name, value):
    if not isinstance(value, str):
        raise RuntimeError("Parameter '%s' should be str, but actually %s" % (name, type(value)))
    if not value:
        raise RuntimeError("Parameter '%s' should not be empty str" % name)
    return value


def check_bool(name, value):
    if not isinstance(value, bool):
        raise RuntimeError("Parameter '%s' should be bool, but actually %s" % (name, type(value)))
    return value


def check_int(name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeError("Parameter '%s' should be int, but actually %s" % (name, type(value)))
    if minimum is not None and value < minimum:
        raise RuntimeError("Parameter '%s' should be >= %d" % (name, minimum))
    return value


def check_str_list(name, value):
    """A str, or a list/tuple of unique non-empty str, as a tuple."""
    if isinstance(value, str):
        return (check_str(name, value),)
    if not isinstance(value, (list, tuple)):
        raise RuntimeError("Parameter '%s' should be str or tuple/list of str, but actually %s" % (name, type(value)))
    seen = []
    for item in value:
        check_str(name, item)
        if item in seen:
            raise RuntimeError("The item value '%s' in parameter '%s' should not be repeated" % (item, name))
        seen.append(item)
    return tuple(seen)


def check_int_list(name, value, minimum=0):
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    for item in items:
        check_int(name, item, minimum)
    if len(set(items)) != len(items):
        raise RuntimeError("The item value '%s' in parameter '%s' should not be repeated" % (items, name))
    return tuple(items)


def deprecated(name, version, new):
    print("WARNING: '%s' is deprecated from version %s and will be removed in a future version, use '%s' "
          "instead." % (name, version, new), file=sys.stderr)
