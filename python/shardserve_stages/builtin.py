"""MindSpore Serving's built-in stage functions, named by a string in add_stage (its C++
registry): only "argmax_cpp" exists there, and here (a python_function stage the shim points at)."""
import numpy as np


def argmax_cpp(x):
    """The index of the largest element, as MindSpore's: an INT64 scalar."""
    return np.int64(np.argmax(x))
