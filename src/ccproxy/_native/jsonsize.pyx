# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython twin of jsonsize_py.py (the reference): the same sizes, one typed walk."""

from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject

import msgspec

cdef object _Raw = msgspec.Raw


cpdef Py_ssize_t str_size(str text) except -1:
    cdef Py_ssize_t size = 2, i, n = len(text)
    cdef Py_UCS4 ch
    cdef unsigned int c
    for ch in text:
        c = ch
        if c < 0x80:
            if c >= 0x20:
                size += 2 if (c == 0x22 or c == 0x5C) else 1
            elif c == 0x0A or c == 0x0D or c == 0x09 or c == 0x08 or c == 0x0C:
                size += 2
            else:
                size += 6
        elif c < 0x800:
            size += 2
        elif c < 0x10000:
            size += 3
        else:
            size += 4
    return size


cpdef Py_ssize_t json_size(object value) except -1:
    cdef Py_ssize_t size, pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef type t = type(value)
    if t is str:
        return str_size(<str>value)
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if t is dict:
        if not value:
            return 2
        size = 1 + len(<dict>value)
        while PyDict_Next(<dict>value, &pos, &k, &v):
            key = <object>k
            size += str_size(key) if isinstance(key, str) else str_size(str(key))
            size += 1 + json_size(<object>v)
        return size
    if t is list or t is tuple:
        if not value:
            return 2
        size = 1 + len(value)
        for item in value:
            size += json_size(item)
        return size
    if t is int:
        return len(str(value))
    if t is float:
        return len(repr(value))
    # subclasses and the rest: the reference's order of checks
    if isinstance(value, str):
        return str_size(value)
    if isinstance(value, int):
        return len(str(value))
    if isinstance(value, float):
        return len(repr(value))
    if isinstance(value, dict):
        if not value:
            return 2
        size = 1 + len(value)
        for key, item in value.items():
            size += (str_size(key) if isinstance(key, str) else str_size(str(key))) + 1 + json_size(item)
        return size
    if isinstance(value, (list, tuple)):
        if not value:
            return 2
        return 1 + len(value) + sum([json_size(item) for item in value])
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, _Raw):
        return len(value)
    return str_size(str(value))
