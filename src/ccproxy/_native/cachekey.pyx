# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of cachekey_py.py (the reference): the same canonical bytes, written into one
growable C buffer by a typed walk, then hashed."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import hashlib

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

VOLATILE_FIELDS = frozenset({"metadata", "cache_control", "stream"})


cdef struct Buf:
    char* data
    Py_ssize_t length
    Py_ssize_t capacity


cdef int _reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.capacity
    cdef char* grown
    if b.length + extra <= cap:
        return 0
    while cap < b.length + extra:
        cap *= 2
    grown = <char*>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.capacity = cap
    return 0


cdef inline int _write(Buf* b, const char* s, Py_ssize_t n) except -1:
    _reserve(b, n)
    memcpy(b.data + b.length, s, n)
    b.length += n
    return 0


cdef inline int _byte(Buf* b, char c) except -1:
    _reserve(b, 1)
    b.data[b.length] = c
    b.length += 1
    return 0


cdef int _decimal(Buf* b, long long v) except -1:
    cdef char digits[24]
    cdef int i = 24
    cdef bint negative = v < 0
    cdef unsigned long long u = <unsigned long long>(-v) if negative else <unsigned long long>v
    if u == 0:
        i -= 1
        digits[i] = 48
    while u:
        i -= 1
        digits[i] = <char>(48 + u % 10)
        u //= 10
    if negative:
        i -= 1
        digits[i] = 45
    return _write(b, digits + i, 24 - i)


cdef int _text(Buf* b, object value) except -1:
    cdef Py_ssize_t n
    cdef const char* u
    cdef bytes data
    try:
        u = PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError:  # lone surrogates: the reference's "surrogatepass" bytes
        data = value.encode("utf-8", "surrogatepass")
        _byte(b, 115)
        _decimal(b, PyBytes_GET_SIZE(data))
        _byte(b, 58)
        return _write(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _byte(b, 115)  # "s<len>:<utf-8>"
    _decimal(b, n)
    _byte(b, 58)
    return _write(b, u, n)


cdef int _tagged(Buf* b, char tag, bytes data) except -1:
    _byte(b, tag)
    _decimal(b, PyBytes_GET_SIZE(data))
    _byte(b, 58)
    return _write(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


def _sort_key(k):
    return k if isinstance(k, str) else repr(k)


cdef int _encode(object value, frozenset exclude, Buf* b) except -1:
    cdef type t = type(value)
    cdef list keys
    cdef bint all_str
    cdef int overflow = 0
    cdef long long small
    if t is str:
        return _text(b, value)
    if t is dict:
        _byte(b, 123)
        keys = []
        all_str = True
        for k in <dict>value:
            if isinstance(k, str):
                if k not in exclude:
                    keys.append(k)
            else:
                keys.append(k)
                all_str = False
        if all_str:
            keys.sort()
        else:
            keys.sort(key=_sort_key)
        for k in keys:
            _encode(k if isinstance(k, str) else repr(k), exclude, b)
            _encode((<dict>value)[k], exclude, b)
        return _byte(b, 125)
    if t is list or t is tuple:
        _byte(b, 91)
        for item in value:
            _encode(item, exclude, b)
        return _byte(b, 93)
    if value is None:
        return _byte(b, 110)
    if value is True:
        return _byte(b, 116)
    if value is False:
        return _byte(b, 102)
    if t is int:
        small = PyLong_AsLongLongAndOverflow(value, &overflow)
        _byte(b, 105)
        if overflow == 0:
            _decimal(b, small)
        else:
            data = str(value).encode()
            _write(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return _byte(b, 59)
    return _encode_other(value, exclude, b)


cdef int _encode_other(object value, frozenset exclude, Buf* b) except -1:
    # subclasses and the rest, in the reference's order of checks
    cdef bytes data
    if isinstance(value, str):
        return _text(b, str(value))
    if isinstance(value, dict):
        _byte(b, 123)
        keys = [k for k in value if not (isinstance(k, str) and k in exclude)]
        keys.sort(key=_sort_key)
        for k in keys:
            _encode(k if isinstance(k, str) else repr(k), exclude, b)
            _encode(value[k], exclude, b)
        return _byte(b, 125)
    if isinstance(value, (list, tuple)):
        _byte(b, 91)
        for item in value:
            _encode(item, exclude, b)
        return _byte(b, 93)
    if isinstance(value, int):
        data = b"i%d;" % value
        return _write(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if isinstance(value, float):
        data = b"d" + repr(value).encode() + b";"
        return _write(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if isinstance(value, (bytes, bytearray)):
        return _tagged(b, 98, bytes(value))
    return _tagged(b, 111, repr(value).encode("utf-8", "surrogatepass"))


def cache_key(value, frozenset exclude=VOLATILE_FIELDS):
    cdef Buf b
    b.capacity = 65536
    b.length = 0
    b.data = <char*>malloc(b.capacity)
    if b.data == NULL:
        raise MemoryError()
    try:
        _encode(value, exclude, &b)
        data = PyBytes_FromStringAndSize(b.data, b.length)
    finally:
        free(b.data)
    return hashlib.sha256(data).hexdigest()[:32]
