# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython twin of sse_py.py (the reference): identical results, less per-event overhead."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8String
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy

import orjson

cdef dict _names = {}


cdef inline bytes _name(str event):
    cdef object cached = _names.get(event)
    if cached is None:
        cached = PyUnicode_AsUTF8String(event)
        if len(_names) < 64:
            _names[event] = cached
    return <bytes>cached


cpdef bytes frame_event(str event, bytes data):
    cdef bytes name = _name(event)
    cdef Py_ssize_t n1 = PyBytes_GET_SIZE(name), n2 = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 + n1 + n2)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, b"event: ", 7)
    memcpy(p + 7, PyBytes_AS_STRING(name), n1)
    p += 7 + n1
    memcpy(p, b"\ndata: ", 7)
    memcpy(p + 7, PyBytes_AS_STRING(data), n2)
    p += 7 + n2
    memcpy(p, b"\n\n", 2)
    return out


cdef const char* _HEX = b"0123456789abcdef"
cdef bytes _DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    const unsigned char* PyUnicode_1BYTE_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

# JSON escape of an ASCII byte: 0 = as is, 1 = short escape (\" \\ \n …), 2 = \u00XX
cdef unsigned char _ESC[128]
cdef char _SHORT[128]
for _i in range(128):
    _ESC[_i] = 2 if _i < 0x20 else 0
    _SHORT[_i] = 0
for _c, _e in ((0x22, 0x22), (0x5C, 0x5C), (0x0A, 0x6E), (0x0D, 0x72), (0x09, 0x74), (0x08, 0x62), (0x0C, 0x66)):
    _ESC[_c] = 1
    _SHORT[_c] = _e


cdef inline char* _digits(char* p, Py_ssize_t v):
    cdef char tmp[24]
    cdef int i = 24
    cdef bint negative = v < 0
    cdef size_t u = <size_t>(-v) if negative else <size_t>v
    if u == 0:
        i -= 1
        tmp[i] = 48
    while u:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
    if negative:
        i -= 1
        tmp[i] = 45
    memcpy(p, tmp + i, 24 - i)
    return p + (24 - i)


cdef inline char* _ascii(char* p, unsigned char b) noexcept:
    """One ASCII character as JSON string content, escaped exactly as orjson does."""
    if _ESC[b] == 0:
        p[0] = <char>b
        return p + 1
    if _ESC[b] == 1:
        p[0] = 0x5C
        p[1] = _SHORT[b]
        return p + 2
    memcpy(p, b"\\u00", 4)
    p[4] = _HEX[b >> 4]
    p[5] = _HEX[b & 15]
    return p + 6


cpdef bytes content_delta(Py_ssize_t index, str delta_type, str field, str value):
    cdef bytes dt = _name(delta_type)
    cdef bytes fd = _name(field)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(value), size, run
    cdef Py_ssize_t cap = PyBytes_GET_SIZE(_DELTA_HEAD) + 64 + PyBytes_GET_SIZE(dt) + PyBytes_GET_SIZE(fd) + n * 6
    cdef char local[2048]
    cdef char* buf = local
    cdef char* p
    cdef const unsigned char* src
    cdef Py_UCS4 ch
    cdef unsigned int c
    cdef bytes result
    if cap > 2048:
        buf = <char*>malloc(cap)
        if buf == NULL:
            raise MemoryError()
    try:
        p = buf
        memcpy(p, PyBytes_AS_STRING(_DELTA_HEAD), PyBytes_GET_SIZE(_DELTA_HEAD))
        p = _digits(p + PyBytes_GET_SIZE(_DELTA_HEAD), index)
        memcpy(p, b',"delta":{"type":"', 18)
        p += 18
        memcpy(p, PyBytes_AS_STRING(dt), PyBytes_GET_SIZE(dt))
        p += PyBytes_GET_SIZE(dt)
        memcpy(p, b'","', 3)
        p += 3
        memcpy(p, PyBytes_AS_STRING(fd), PyBytes_GET_SIZE(fd))
        p += PyBytes_GET_SIZE(fd)
        memcpy(p, b'":"', 3)
        p += 3
        if PyUnicode_IS_ASCII(value):
            src = PyUnicode_1BYTE_DATA(value)
            run = 0
            while run < n:
                p = _ascii(p, src[run])
                run += 1
        else:
            for ch in value:
                c = ch
                if c < 0x80:
                    p = _ascii(p, <unsigned char>c)
                elif c < 0x800:
                    p[0] = <char>(0xC0 | (c >> 6))
                    p[1] = <char>(0x80 | (c & 0x3F))
                    p += 2
                elif 0xD800 <= c <= 0xDFFF:
                    # orjson refuses surrogates; defer to it so even the error is identical
                    return _orjson_delta(index, delta_type, field, value)
                elif c < 0x10000:
                    p[0] = <char>(0xE0 | (c >> 12))
                    p[1] = <char>(0x80 | ((c >> 6) & 0x3F))
                    p[2] = <char>(0x80 | (c & 0x3F))
                    p += 3
                else:
                    p[0] = <char>(0xF0 | (c >> 18))
                    p[1] = <char>(0x80 | ((c >> 12) & 0x3F))
                    p[2] = <char>(0x80 | ((c >> 6) & 0x3F))
                    p[3] = <char>(0x80 | (c & 0x3F))
                    p += 4
        memcpy(p, b'"}}\n\n', 5)
        p += 5
        size = p - buf
        result = PyBytes_FromStringAndSize(buf, size)
    finally:
        if buf != local:
            free(buf)
    return result


def _orjson_delta(index, delta_type, field, value):
    return (
        _DELTA_HEAD + str(index).encode() + b',"delta":{"type":"' + delta_type.encode() + b'","'
        + field.encode() + b'":' + orjson.dumps(value) + b"}}\n\n"
    )


cdef object _parse_block(bytes buf, Py_ssize_t off, Py_ssize_t end):
    """Parse buf[off:end] in place; only the parts that are returned are copied out."""
    cdef const char* s = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = end - off, i, j, colon, vstart
    cdef object event = None
    cdef list data
    if n >= 6 and memchr(s + off, 0x0A, n) == NULL and s[off] == 0x64 and s[off + 1] == 0x61 \
            and s[off + 2] == 0x74 and s[off + 3] == 0x61 and s[off + 4] == 0x3A and s[off + 5] == 0x20:
        return (None, PyBytes_FromStringAndSize(s + off + 6, n - 6))
    data = []
    i = off
    while i <= end:
        j = i
        while j < end and s[j] != 0x0A:
            j += 1
        if j > i and s[i] != 0x3A:  # not blank, not a ":" comment
            colon = i
            while colon < j and s[colon] != 0x3A:
                colon += 1
            vstart = j
            if colon < j:
                vstart = colon + 1
                if vstart < j and s[vstart] == 0x20:
                    vstart += 1
            if colon - i == 4 and s[i] == 0x64 and s[i + 1] == 0x61 and s[i + 2] == 0x74 and s[i + 3] == 0x61:
                data.append(PyBytes_FromStringAndSize(s + vstart, j - vstart))
            elif colon - i == 5 and s[i] == 0x65 and s[i + 1] == 0x76 and s[i + 2] == 0x65 \
                    and s[i + 3] == 0x6E and s[i + 4] == 0x74:
                event = PyBytes_FromStringAndSize(s + vstart, j - vstart).decode("utf-8", "replace").strip()
        i = j + 1
    if not data:
        return None
    return (event, data[0] if len(data) == 1 else b"\n".join(data))


cdef class SSEDecoder:
    cdef bytes _buf

    def __init__(self):
        self._buf = b""

    cpdef list feed(self, bytes chunk):
        cdef bytes buf = self._buf + chunk if PyBytes_GET_SIZE(self._buf) else chunk
        if memchr(PyBytes_AS_STRING(buf), 0x0D, PyBytes_GET_SIZE(buf)) != NULL:
            buf = buf.replace(b"\r\n", b"\n")
        # Same split as the reference: everything before the last blank line, cut at blank lines.
        cdef Py_ssize_t end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2:]
        cdef const char* s = PyBytes_AS_STRING(buf)
        cdef Py_ssize_t start = 0, i = 0, j
        cdef const char* hit
        cdef list out = []
        cdef object parsed
        while True:
            j = -1
            while i < end:
                hit = <const char*>memchr(s + i, 0x0A, end - i)
                if hit == NULL:
                    break
                if hit - s + 1 < end and (hit + 1)[0] == 0x0A:
                    j = hit - s
                    break
                i = hit - s + 1
            if j < 0:
                if end > start:
                    parsed = _parse_block(buf, start, end)
                    if parsed is not None:
                        out.append(parsed)
                return out
            if j > start:
                parsed = _parse_block(buf, start, j)
                if parsed is not None:
                    out.append(parsed)
            start = i = j + 2

    def flush(self):
        block = self._buf.strip(b"\n")
        self._buf = b""
        parsed = _parse_block(block, 0, len(block)) if block else None
        return [parsed] if parsed is not None else []

    @property
    def pending(self):
        return len(self._buf)


# --- text-only Chat chunks (sse_py.text_of_chunk is the reference) -------------------------

from libc.string cimport memcmp
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef bytes _TEXT_START = b'"choices":[{"index":0,"delta":{'
cdef bytes _TEXT_ROLE = b'"role":"assistant",'
cdef bytes _TEXT_CONTENT = b'"content":"'
cdef bytes _TEXT_END_A = b'"},"finish_reason":null}]'
cdef bytes _TEXT_END_B = b'"},"logprobs":null,"finish_reason":null}]'
cdef tuple _NOT_TEXT_ONLY = (b'"usage":{', b'"error"', b'"x_groq"')


cdef inline Py_ssize_t _find(const char* p, Py_ssize_t n, Py_ssize_t start, bytes needle) noexcept:
    """Index of ``needle`` in p[start:n], or -1. The scan looks for the needle's second byte,
    rarer in JSON than its opening quote."""
    cdef const char* s = PyBytes_AS_STRING(needle)
    cdef Py_ssize_t m = PyBytes_GET_SIZE(needle)
    cdef const char* hit
    cdef Py_ssize_t at = start + 1  # where the pivot byte (s[1]) may be
    while at + m - 1 <= n:
        hit = <const char*>memchr(p + at, s[1], n - (m - 1) - at + 1)
        if hit == NULL:
            return -1
        if memcmp(hit - 1, s, m) == 0:
            return hit - 1 - p
        at = hit - p + 1
    return -1


cdef inline bint _starts(const char* p, Py_ssize_t n, Py_ssize_t at, bytes prefix) noexcept:
    cdef Py_ssize_t m = PyBytes_GET_SIZE(prefix)
    return at + m <= n and memcmp(p + at, PyBytes_AS_STRING(prefix), m) == 0


cpdef object text_of_chunk(bytes data):
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t at = _find(p, n, 0, _TEXT_START)
    cdef Py_ssize_t end
    cdef const char* quote
    cdef bint plain = True
    cdef unsigned char c
    cdef Py_ssize_t i
    if at < 0:
        return None
    at += PyBytes_GET_SIZE(_TEXT_START)
    if _starts(p, n, at, _TEXT_ROLE):
        at += PyBytes_GET_SIZE(_TEXT_ROLE)
    if not _starts(p, n, at, _TEXT_CONTENT):
        return None
    at += PyBytes_GET_SIZE(_TEXT_CONTENT)
    quote = <const char*>memchr(p + at, 0x22, n - at)
    if quote == NULL:
        return None
    end = quote - p
    if not (_starts(p, n, end, _TEXT_END_A) or _starts(p, n, end, _TEXT_END_B)):
        return None
    for marker in _NOT_TEXT_ONLY:
        if _find(p, n, 0, <bytes>marker) >= 0:
            return None
    for i in range(at, end):
        c = <unsigned char>p[i]
        if c == 0x5C or c < 0x20:  # an escape, or a control character JSON refuses: orjson decides
            plain = False
            break
    if plain:
        try:
            return PyUnicode_DecodeUTF8(p + at, end - at, NULL)
        except UnicodeDecodeError:
            return None
    try:
        return orjson.loads(b'"' + data[at:end] + b'"')
    except orjson.JSONDecodeError:
        return None


def text_run(list items, Py_ssize_t start, Py_ssize_t index):
    """The ``text_delta`` events of the text-only chunks that lead ``items[start:]`` (the
    ``(event, data)`` pairs ``SSEDecoder.feed`` returns), all for the open text block ``index``:
    ``(events, pairs consumed, characters)``. Stops at the first pair that is anything else."""
    cdef Py_ssize_t k = start, n = len(items), chars = 0, length
    cdef list parts = []
    cdef object item, text
    while k < n:
        item = items[k]
        if item[0] is not None:
            break
        text = text_of_chunk(<bytes>item[1])
        if text is None:
            break
        length = PyUnicode_GET_LENGTH(text)
        if length:
            parts.append(content_delta(index, "text_delta", "text", <str>text))
            chars += length
        k += 1
    return b"".join(parts), k - start, chars
