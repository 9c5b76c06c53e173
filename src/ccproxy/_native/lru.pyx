# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of lru_py.py (the reference): a dict of nodes on a C-level doubly linked list,
each node carrying its expiry time."""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.math cimport INFINITY
from posix.time cimport clock_gettime, clockid_t, timespec


cdef extern from "<time.h>":
    clockid_t CLOCK_MONOTONIC_COARSE


cdef inline double _monotonic():
    # time.monotonic()'s clock at kernel-tick resolution (1-10 ms): a fraction of the cost, and
    # ample for expiry measured in seconds.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.final
@cython.freelist(64)
cdef class _Node:
    cdef _Node prev
    cdef _Node next
    cdef object key
    cdef object value
    cdef Py_ssize_t size
    cdef double expires


@cython.final
cdef class LRUCache:
    cdef dict _nodes
    cdef _Node _head  # sentinel: head.next is the least recently used
    cdef public Py_ssize_t max_entries, max_bytes, total_bytes, evictions, expirations, hits, misses
    cdef public double ttl

    def __init__(self, Py_ssize_t max_entries, Py_ssize_t max_bytes, double ttl=0.0):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        if ttl < 0:
            raise ValueError("ttl must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.total_bytes = 0
        self.evictions = 0
        self.expirations = 0
        self.hits = 0
        self.misses = 0
        self._nodes = {}
        self._head = _Node()
        self._head.prev = self._head
        self._head.next = self._head

    cdef inline void _unlink(self, _Node node):
        node.prev.next = node.next
        node.next.prev = node.prev

    cdef inline void _append(self, _Node node):
        cdef _Node last = self._head.prev
        last.next = node
        node.prev = last
        node.next = self._head
        self._head.prev = node

    def get(self, object key, object default=None, object now=None):
        cdef PyObject* found = PyDict_GetItem(self._nodes, key)
        if found == NULL:
            self.misses += 1
            return default
        cdef _Node node = <_Node>found
        if node.expires != INFINITY and node.expires <= (_monotonic() if now is None else <double>now):
            del self._nodes[key]
            self._unlink(node)
            self.total_bytes -= node.size
            self.expirations += 1
            self.misses += 1
            return default
        self.hits += 1
        if node is not self._head.prev:
            self._unlink(node)
            self._append(node)
        return node.value

    def put(self, object key, object value, Py_ssize_t size, object now=None):
        if size < 0:
            raise ValueError("size must not be negative")
        cdef double expires = INFINITY
        if self.ttl > 0:
            expires = (_monotonic() if now is None else <double>now) + self.ttl
        cdef PyObject* found = PyDict_GetItem(self._nodes, key)
        cdef _Node node
        if found != NULL:
            node = <_Node>found
            self.total_bytes -= node.size
            if size > self.max_bytes:
                del self._nodes[key]
                self._unlink(node)
                return False
            # Replace in place and make it the most recent: the reference's pop + insert.
            node.value = value
            node.size = size
            node.expires = expires
            if node is not self._head.prev:
                self._unlink(node)
                self._append(node)
            self.total_bytes += size
            self._evict_over_bounds()
            return True
        if size > self.max_bytes:
            return False
        if len(self._nodes) >= self.max_entries and self._head.next is not self._head:
            # Full: evict the least recently used now and reuse its node (the reference evicts
            # the same entry right after inserting; the outcome is identical).
            node = self._head.next
            self._unlink(node)
            del self._nodes[node.key]
            self.total_bytes -= node.size
            self.evictions += 1
        else:
            node = _Node()
        node.key = key
        node.value = value
        node.size = size
        node.expires = expires
        self._nodes[key] = node
        self._append(node)
        self.total_bytes += size
        self._evict_over_bounds()
        return True

    cdef inline void _evict_over_bounds(self) except *:
        cdef _Node node
        while len(self._nodes) > self.max_entries or self.total_bytes > self.max_bytes:
            node = self._head.next
            self._unlink(node)
            del self._nodes[node.key]
            self.total_bytes -= node.size
            self.evictions += 1

    def pop(self, object key, object default=None):
        cdef object found = self._nodes.pop(key, None)
        if found is None:
            return default
        cdef _Node node = <_Node>found
        self._unlink(node)
        self.total_bytes -= node.size
        return node.value

    def clear(self):
        self._nodes.clear()
        self._head.prev = self._head
        self._head.next = self._head
        self.total_bytes = 0

    def keys(self):
        cdef list out = []
        cdef _Node node = self._head.next
        while node is not self._head:
            out.append(node.key)
            node = node.next
        return out

    def __len__(self):
        return len(self._nodes)

    def __contains__(self, key):
        return key in self._nodes
