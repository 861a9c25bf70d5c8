"""Memoize a function in any tier: ``cache_tnfr_computation`` (upstream TNFR's decorator) and ``cached``.

A call is keyed by the fingerprint of the function's module and qualified name plus its
bound arguments with defaults applied, so ``f(1)`` and ``f(x=1)`` are one entry and a key
means the same thing in every process (the disk and Redis tiers share entries across
runs). The hot path avoids :meth:`inspect.Signature.bind`: a call made with positional
arguments only is keyed from ``args`` plus precomputed defaults.

A networkx graph argument is keyed by its structure and attributes. Hashing a large graph
on every call is what makes upstream's hits cost milliseconds, so a graph registered
with :class:`GraphChangeTracker` keeps its structural digest until one of its mutation
methods (or :func:`track_node_property_update`) runs.
"""

import asyncio
import copyreg
import functools
import inspect
import logging
import math
import pickle
import threading
import time
from collections import namedtuple

import numpy as np

from .backends.base import DEFAULT_LEVEL, MISSING, CacheTier
from .backends.tiered import TieredCache
from .errors import FastCacheError, InvalidArgumentError, UnhashableKeyError
from .keys import Prehashed, fingerprint
from .levels import CacheLevel, as_level

__all__ = [
    "cache_tnfr_computation",
    "cached",
    "invalidate_function_cache",
    "get_global_cache",
    "set_global_cache",
    "reset_global_cache",
    "GraphChangeTracker",
    "track_node_property_update",
    "CacheInfo",
    "NotCacheableError",
    "ERROR_LOG_INTERVAL",
]

logger = logging.getLogger(__name__)

#: A cached function logs tier failures at most once per this many seconds.
ERROR_LOG_INTERVAL = 60.0

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])
CacheInfo.__doc__ = """Counters of a cached function, as :func:`functools.lru_cache` reports them.

``maxsize`` is the budget in MB of a cache the function owns (``cached()``), else None;
``currsize`` is the number of entries in that cache, else None (a shared cache holds
other functions' entries too).
"""


class NotCacheableError(InvalidArgumentError, TypeError):
    """The function (a generator) or its result (a generator, a coroutine) cannot be cached."""


# A tier failing (Redis down, disk full) makes a call a miss; the caller's own mistakes
# (a key we cannot fingerprint, a bad level) are not tier failures and propagate.
_TIER_ERRORS = (FastCacheError, OSError)
_CALLER_ERRORS = (UnhashableKeyError, InvalidArgumentError)
# A persistent tier may be unable to serialize a result; the result is still returned.
_STORE_ERRORS = _TIER_ERRORS + (pickle.PicklingError, TypeError, AttributeError)

# Arguments whose fingerprint takes well under a microsecond: a function called with only
# these is not timed (two clock reads would cost a third of its hit). Buffers, arrays,
# graphs, containers and other objects are, since their hashing is what costs.
_UNTIMED_TYPES = frozenset({int, float, complex, bool, str, type(None)})
# Flights remembered after landing, to tell a miss that raced one from a plain miss.
_RECENT_LANDINGS = 256
_perf_counter = time.perf_counter


# -- the process-wide default cache ------------------------------------------------------

_global_cache = None
_global_leases = False  # whether _global_cache is a lease tier used directly (see _leases_directly)
_global_lock = threading.Lock()


def _leases_directly(cache):
    """Whether calls go straight to ``cache.get_or_compute`` (a lease tier such as Redis).

    Such a tier counts the one hit or miss of its lease itself, so a lookup before it would
    count the call twice. A ``TieredCache`` is told about the caller's miss instead.
    """
    return not isinstance(cache, TieredCache) and callable(getattr(cache, "get_or_compute", None))


def get_global_cache():
    """Return the process-wide cache, creating a 512 MB ``TNFRHierarchicalCache`` on first use.

    Returns
    -------
    CacheTier
        The cache that decorated functions without ``cache_instance`` use.
    """
    global _global_cache
    cache = _global_cache
    if cache is None:
        with _global_lock:
            if _global_cache is None:
                from .backends.memory import TNFRHierarchicalCache

                _global_cache = TNFRHierarchicalCache(max_memory_mb=512)
            cache = _global_cache
    return cache


def set_global_cache(cache):
    """Make ``cache`` the process-wide default (None: a fresh default on next use).

    Parameters
    ----------
    cache : CacheTier or None
        Any tier or a ``TieredCache``. Functions decorated without ``cache_instance``
        use it from their next call on.
    """
    global _global_cache, _global_leases
    if cache is not None and not isinstance(cache, CacheTier):
        raise InvalidArgumentError(
            f"set_global_cache takes a CacheTier (memory, disk, Redis, TieredCache) or None, "
            f"not {type(cache).__name__}"
        )
    with _global_lock:
        _global_leases = cache is not None and _leases_directly(cache)
        _global_cache = cache


def reset_global_cache():
    """Forget the process-wide cache; the next :func:`get_global_cache` creates a fresh one."""
    set_global_cache(None)


# -- results ---------------------------------------------------------------------------

_CONTAINER_DEPTH = 4


def _frozen(value, depth=0):
    """``value`` with its arrays (also inside tuples, lists and dicts) as read-only views."""
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:
            return value
        view = value.view()
        view.flags.writeable = False
        return view
    return _map_container(value, _frozen, depth)


def _private(value, depth=0):
    """``value`` with its arrays (also inside tuples, lists and dicts) copied."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return _map_container(value, _private, depth)


def _map_container(value, fn, depth):
    kind = type(value)
    if depth >= _CONTAINER_DEPTH or kind not in (tuple, list, dict):
        return value
    if kind is dict:
        mapped = {k: fn(v, depth + 1) for k, v in value.items()}
        changed = any(mapped[k] is not v for k, v in value.items())
    else:
        mapped = [fn(v, depth + 1) for v in value]
        changed = any(a is not b for a, b in zip(mapped, value))
        if changed and kind is tuple:
            mapped = tuple(mapped)
    return mapped if changed else value


def _only_scalars(args, kwargs):
    """Whether a call passes nothing but numbers, strings and None (see ``_UNTIMED_TYPES``)."""
    kinds = _UNTIMED_TYPES
    return all(type(v) in kinds for v in args) and all(type(v) in kinds for v in kwargs.values())


def _untyped(value):
    """Equal numbers share a key when ``typed=False`` (as in :func:`functools.lru_cache`)."""
    kind = type(value)
    if kind is bool:
        return int(value)
    if kind is float and value.is_integer():
        return int(value)
    return value


# -- graph tracking --------------------------------------------------------------------

_STATE_ATTR = "_fastcache_tracking"
_MUTATORS = (
    "add_node", "add_nodes_from", "remove_node", "remove_nodes_from",
    "add_edge", "add_edges_from", "add_weighted_edges_from", "remove_edge",
    "remove_edges_from", "clear", "clear_edges", "update",
)
# TNFR stores a field under its first alias; a write to any alias is a write to the field.
_TNFR_ALIASES = {
    "epi": ("EPI", "psi", "PSI", "value", "epi"),
    "vf": ("νf", "nu_f", "nu-f", "nu", "freq", "frequency", "vf"),
    "phase": ("theta", "phase"),
    "dnfr": ("ΔNFR", "delta_nfr", "dnfr"),
    "depi": ("dEPI_dt", "dpsi_dt", "dEPI", "velocity", "depi"),
}
_tracked_classes = {}  # graph class -> its tracked subclass
_tracked_types = set()  # the tracked subclasses, for a cheap type test on the hot path
_tracking_lock = threading.Lock()


class _TrackState:
    """What a tracked graph carries: its trackers, version and cached structural digest."""

    __slots__ = ("trackers", "version", "digest", "depth")

    def __init__(self):
        self.trackers = []
        self.version = 0
        self.digest = None
        self.depth = 0

    def changed(self):
        self.version += 1
        self.digest = None


def _public_graph_attrs(graph_dict):
    # The same rule as the fingerprint's default: TNFR keeps runtime caches, locks and a
    # growing history under these keys, and its configuration under the public ones.
    return {
        k: v for k, v in graph_dict.items()
        if not (type(k) is str and (k.startswith("_") or k == "history"))
    }


def _graph_token(graph):
    """The key of a tracked graph: its cached structural digest plus its graph attributes.

    Graph attributes are digested on every call (they are few) so that configuration
    written straight into ``G.graph`` is never missed.
    """
    state = graph.__dict__.get(_STATE_ATTR)
    if state is None:
        return graph
    digest = state.digest
    if digest is None:
        version = state.version
        digest = fingerprint(graph, graph_attrs="none")
        if state.version == version:
            state.digest = digest
    return (Prehashed(digest), _public_graph_attrs(graph.graph))


def _swap_graphs(values):
    return tuple(_graph_token(v) if type(v) in _tracked_types else v for v in values)


def _make_mutator(base, name):
    original = getattr(base, name)

    @functools.wraps(original)
    def mutator(self, *args, **kwargs):
        state = self.__dict__.get(_STATE_ATTR)
        if state is None:
            return original(self, *args, **kwargs)
        state.depth += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            # Also after an exception: a bulk operation may have changed a prefix before failing.
            state.depth -= 1
            state.changed()
            if state.depth == 0:
                for tracker in list(state.trackers):
                    tracker._on_topology_change()

    return mutator


def _reduce_untracked(self, protocol):
    # Pickles (and copies) as the original class: the copy is not tracked, and unpickling
    # needs only networkx, not tnfr_fastcache.
    state = {k: v for k, v in self.__dict__.items() if k != _STATE_ATTR}
    return copyreg._reconstructor, (type(self).__fastcache_base__, object, None), state


def _tracked_class(base):
    with _tracking_lock:
        cls = _tracked_classes.get(base)
        if cls is None:
            namespace = {name: _make_mutator(base, name) for name in _MUTATORS if callable(getattr(base, name, None))}
            namespace["__reduce_ex__"] = _reduce_untracked
            namespace["__fastcache_base__"] = base
            namespace["__module__"] = base.__module__
            namespace["__qualname__"] = base.__qualname__
            cls = type(base.__name__, (base,), namespace)
            _tracked_classes[base] = cls
            _tracked_types.add(cls)
    return cls


class GraphChangeTracker:
    """Keep a graph's cached digest and a cache's entries in step with the graph's changes.

    Parameters
    ----------
    cache : CacheTier, optional
        The cache whose ``graph_topology`` (and ``node_*``) entries mutations invalidate;
        the process-wide cache when None.

    Attributes
    ----------
    topology_changes : int
        Mutation calls seen (a bulk call such as ``add_edges_from`` counts once).
    property_changes : int
        Node property writes reported through :func:`track_node_property_update`.

    Notes
    -----
    Tracking swaps the graph's class for a subclass whose mutation methods (``add_node``,
    ``add_edges_from``, ``remove_nodes_from``, ``clear``, ...) also drop the cached
    digest and invalidate. Nothing is stored in ``G.graph``; the graph stays picklable
    and a pickled or copied graph comes back as the original class, untracked.
    Attribute writes that bypass the methods (``G.nodes[n]["x"] = v``) are not seen:
    write them with :func:`track_node_property_update`.

    Examples
    --------
    >>> import networkx as nx
    >>> from tnfr_fastcache import TNFRHierarchicalCache, GraphChangeTracker, CacheLevel
    >>> cache = TNFRHierarchicalCache()
    >>> G = nx.path_graph(3)
    >>> GraphChangeTracker(cache).track_graph_changes(G)
    >>> cache.set("k", 1, CacheLevel.GRAPH_STRUCTURE, {"graph_topology"})
    True
    >>> G.add_edge(0, 2)
    >>> cache.get("k", CacheLevel.GRAPH_STRUCTURE) is None
    True
    """

    def __init__(self, cache=None):
        if cache is not None and not isinstance(cache, CacheTier):
            raise InvalidArgumentError(f"GraphChangeTracker takes a CacheTier or None, not {type(cache).__name__}")
        self._cache = cache
        self.topology_changes = 0
        self.property_changes = 0

    @property
    def cache(self):
        """The cache this tracker invalidates."""
        return self._cache if self._cache is not None else get_global_cache()

    def track_graph_changes(self, graph):
        """Start tracking ``graph`` (a networkx graph); tracking twice is harmless.

        Parameters
        ----------
        graph : networkx.Graph
            Any networkx graph class or subclass.
        """
        if not (hasattr(graph, "graph") and callable(getattr(graph, "nodes", None)) and hasattr(graph, "__dict__")):
            raise InvalidArgumentError(f"track_graph_changes takes a networkx graph, not {type(graph).__name__}")
        with _tracking_lock:
            state = graph.__dict__.get(_STATE_ATTR)
            if state is None:
                state = graph.__dict__[_STATE_ATTR] = _TrackState()
            if self not in state.trackers:
                state.trackers.append(self)
        if type(graph) not in _tracked_types:
            graph.__class__ = _tracked_class(type(graph))

    def on_node_property_change(self, node_id, property_name, old_value=None, new_value=None):
        """Invalidate what depends on ``property_name`` of ``node_id`` (upstream's names)."""
        cache = self.cache
        names = {f"node_{property_name}_{node_id}", f"all_node_{property_name}", "node_data"}
        for field, aliases in _TNFR_ALIASES.items():
            if property_name in aliases:
                names.update((f"node_{field}", f"node_{field}_{node_id}", f"all_node_{field}"))
        if property_name in ("epi", "vf", "phase", "delta_nfr"):
            names.add(f"derived_metrics_{node_id}")
        for name in sorted(names):
            cache.invalidate_by_dependency(name)
        self.property_changes += 1

    def _on_topology_change(self):
        cache = self.cache
        for name in ("graph_topology", "node_neighbors", "adjacency_matrix"):
            cache.invalidate_by_dependency(name)
        self.topology_changes += 1

    def reset_counters(self):
        """Set both change counters back to zero."""
        self.topology_changes = 0
        self.property_changes = 0


def track_node_property_update(graph, node_id, property_name, new_value):
    """Set ``graph.nodes[node_id][property_name]`` and tell the graph's trackers.

    Parameters
    ----------
    graph : networkx.Graph
        The graph, tracked or not (untracked graphs are fingerprinted in full anyway).
    node_id : hashable
        The node; a missing node raises ``KeyError`` as networkx does.
    property_name : str
        The attribute.
    new_value : object
        Its new value.
    """
    attrs = graph.nodes[node_id]
    old_value = attrs.get(property_name)
    attrs[property_name] = new_value
    state = graph.__dict__.get(_STATE_ATTR)
    if state is not None:
        state.changed()
        for tracker in list(state.trackers):
            tracker.on_node_property_change(node_id, property_name, old_value, new_value)


# -- keys ------------------------------------------------------------------------------

_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class _Signature:
    """What keying needs from a signature, precomputed once per decorated function.

    For a signature without ``*args``/``**kwargs`` (``simple``), calls are bound here
    instead of by :meth:`inspect.Signature.bind`, which costs microseconds per call.
    """

    def __init__(self, func, ignore):
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        names = [p.name for p in params]
        unknown = sorted(set(ignore) - set(names))
        if unknown:
            raise InvalidArgumentError(
                f"ignore= names {unknown} that are not parameters of {func.__qualname__}{self.signature}"
            )
        self.names = names
        self.kept = tuple(i for i, name in enumerate(names) if name not in ignore)
        self.simple = not any(p.kind in _VARIADIC_KINDS for p in params)
        self.npositional = sum(p.kind in _POSITIONAL_KINDS for p in params)
        # tails[k]: the defaults that complete a call with k positional arguments and no
        # keywords, or None when such a call misses a required argument.
        self.tails = [None] * (self.npositional + 1)
        if self.simple:
            for k in range(self.npositional + 1):
                rest = params[k:]
                if all(p.default is not p.empty for p in rest):
                    self.tails[k] = tuple(p.default for p in rest)
        # (name, may be given by keyword, default or _NO_DEFAULT) per parameter
        self._binding = [
            (p.name, p.kind is not inspect.Parameter.POSITIONAL_ONLY, MISSING if p.default is p.empty else p.default)
            for p in params
        ]

    def _bind_simple(self, args, kwargs):
        """Values of a call to a simple signature, or None if it is not a valid call."""
        if len(args) > self.npositional:
            return None
        values = list(args)
        used = 0
        for name, by_keyword, default in self._binding[len(args):]:
            if by_keyword and name in kwargs:
                values.append(kwargs[name])
                used += 1
            elif default is not MISSING:
                values.append(default)
            else:
                return None
        return values if used == len(kwargs) else None

    def values(self, args, kwargs):
        """The bound arguments with defaults applied, in parameter order, ignored ones left out.

        Raises the ``TypeError`` a call with these arguments would raise.
        """
        values = self._bind_simple(args, kwargs) if self.simple else None
        if values is None:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = list(bound.arguments.values())
        if len(self.kept) == len(values):
            return tuple(values)
        return tuple(values[i] for i in self.kept)


def _check_ttl(ttl):
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidArgumentError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return float(ttl)


def _check_dependencies(dependencies):
    if dependencies is None:
        return frozenset()
    if isinstance(dependencies, (str, bytes)):
        raise InvalidArgumentError(
            f"dependencies must be a collection of names such as {{'graph_topology'}}, not the string {dependencies!r}"
        )
    deps = frozenset(dependencies)
    bad = [d for d in deps if not isinstance(d, str)]
    if bad:
        raise InvalidArgumentError(f"dependencies must be strings, got {bad!r}")
    return deps


class _Flight:
    """One computation in progress that other callers of the same key wait for."""

    __slots__ = ("done", "value", "error", "owner")

    def __init__(self):
        self.done = threading.Event()
        self.value = MISSING
        self.error = None
        self.owner = threading.get_ident()


# -- the memoizer ----------------------------------------------------------------------


def _check_options(key, ignore):
    if key is not None and not callable(key):
        raise InvalidArgumentError(f"key must be a callable taking the function's arguments, not {key!r}")
    if key is not None and ignore:
        raise InvalidArgumentError("key= and ignore= cannot be combined: the key function decides what counts")
    if isinstance(ignore, str):
        return (ignore,)
    return tuple(ignore)


class _Memo:
    """State and slow paths shared by the sync and async wrappers of one function."""

    def __init__(self, func, *, cache, level, dependencies, cost_estimator, key, ignore, ttl, copy, typed,
                 maxsize_mb=None, owns_cache=False):
        if cache is not None and not isinstance(cache, CacheTier):
            raise InvalidArgumentError(
                f"cache must be a CacheTier (memory, disk, Redis, TieredCache) or None, not {type(cache).__name__}"
            )
        ignore = _check_options(key, ignore)
        self.func = func
        self.cache = cache
        self.level = as_level(level)
        self.dependencies = _check_dependencies(dependencies)
        self.cost_estimator = cost_estimator
        self.key = key
        self.ignore = tuple(ignore)
        self.ttl = _check_ttl(ttl)
        self.copy = bool(copy)
        self.typed = bool(typed)
        self.maxsize_mb = maxsize_mb
        self.owns_cache = owns_cache
        self.qualified = f"{func.__module__}.{func.__qualname__}"
        self.function_dependency = f"__fastcache_function__:{self.qualified}"
        self.entry_dependencies = self.dependencies | {self.function_dependency}
        self.token = Prehashed(fingerprint("tnfr_fastcache.decorator/1", self.qualified))
        self.sig = _Signature(func, self.ignore)
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.waits = 0
        self._last_error_log = -math.inf
        self._lock = threading.Lock()
        self._flights = {}
        # Flights landed so far, and the count at the last landing of each recent key.
        self.landed = 0
        self._recent = {}
        # Whether calls time their fingerprint: the first call decides, a later call with
        # an argument that is not a plain scalar turns it on for good. ``untimed`` is None
        # while calls are timed, else ``landed``: the scalar hit path reads one attribute.
        self.untimed = None
        self._timing_decided = False
        self.key_of = self.slow_key  # _wrap installs its faster one

    # keys

    def fingerprint_call(self, cache, args, kwargs):
        """The call's fingerprint; its time goes to ``cache.metrics`` while calls are timed (``untimed`` is None)."""
        if self.untimed is not None:
            return self.key_of(args, kwargs)
        start = _perf_counter()
        fp = self.key_of(args, kwargs)
        duration = _perf_counter() - start
        metrics = getattr(cache, "metrics", None)
        if metrics is not None:
            metrics.record_hash_time(duration)
        if not self._timing_decided:
            self._timing_decided = True
            if _only_scalars(args, kwargs):
                with self._lock:
                    self.untimed = self.landed
        return fp

    def note_arguments(self, args, kwargs):
        """On a miss: time every later call if this one passes more than plain scalars."""
        if self.untimed is not None and not _only_scalars(args, kwargs):
            with self._lock:
                self.untimed = None

    def fingerprint_values(self, values):
        if not self.typed:
            values = tuple(_untyped(v) for v in values)
        if _tracked_types:
            values = _swap_graphs(values)
        try:
            return fingerprint(self.token, values)
        except UnhashableKeyError as exc:
            raise self._explain(values, exc) from exc

    def slow_key(self, args, kwargs):
        if self.key is not None:
            try:
                custom = self.key(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"the key function of {self.qualified} failed: {exc}") from exc
            return self.fingerprint_values(custom if type(custom) is tuple else (custom,))
        return self.fingerprint_values(self.sig.values(args, kwargs))

    def _explain(self, values, exc):
        if self.key is not None:
            return UnhashableKeyError(
                f"the key function of {self.qualified} returned a value that cannot be keyed: {exc}"
            )
        names = [self.sig.names[i] for i in self.sig.kept]
        for name, value in zip(names, values):
            try:
                fingerprint(value)
            except UnhashableKeyError:
                return UnhashableKeyError(
                    f"{self.qualified}: argument {name!r} of type {type(value).__name__} cannot be part of a "
                    f"cache key ({exc}); give the class a __fastcache_key__() method, or pass "
                    f"ignore=({name!r},) if it does not change the result, or key= to choose the key"
                )
        return exc

    # the cache

    def resolve_cache(self):
        cache = self.cache
        if cache is None:
            cache = _global_cache
            if cache is None:
                cache = get_global_cache()
        return cache

    def tier_failed(self, exc):
        if isinstance(exc, _CALLER_ERRORS):
            raise exc
        now = time.monotonic()
        with self._lock:
            self.errors += 1
            log = now - self._last_error_log >= ERROR_LOG_INTERVAL
            if log:
                self._last_error_log = now
        if log:
            logger.warning(
                "cache of %s failed (%s: %s); computing instead. Further failures are counted in "
                "cache_stats()['errors'] and logged at most every %.0f s",
                self.qualified, type(exc).__name__, exc, ERROR_LOG_INTERVAL,
            )

    def lookup(self, cache, fp):
        try:
            return cache.get(fp, self.level, MISSING, copy=self.copy)
        except _TIER_ERRORS as exc:
            self.tier_failed(exc)
            return MISSING

    def cost(self, args, kwargs):
        if self.cost_estimator is None:
            return 1.0
        try:
            return float(self.cost_estimator(*args, **kwargs))
        except (TypeError, ValueError):
            return 1.0

    def store(self, cache, fp, value, args, kwargs):
        cost = self.cost(args, kwargs)
        try:
            cache.set(fp, value, self.level, self.entry_dependencies, cost, self.ttl)
        except _STORE_ERRORS as exc:
            self.tier_failed(exc)

    def check_result(self, value):
        if inspect.isgenerator(value) or inspect.isasyncgen(value) or inspect.iscoroutine(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: close it so Python does not warn about it
            raise NotCacheableError(
                f"{self.qualified} returned a {type(value).__name__}, which cannot be cached; "
                f"return a value (e.g. a list or an array) instead"
            )
        return value

    def handed_out(self, value, mine):
        """What a caller receives: read-only arrays, or a private copy with ``copy=True``."""
        if self.copy:
            return value if mine else _private(value)
        return _frozen(value)

    # misses, once per key in this process

    def _join(self, fp):
        with self._lock:
            flight = self._flights.get(fp)
            if flight is None or flight.owner == threading.get_ident():
                # The same thread asking again means recursion on one key: waiting would deadlock.
                flight = self._flights[fp] = _Flight()
                return flight, True
            self.waits += 1
            return flight, False

    def _landing(self, fp):
        """Count a flight of ``fp`` landing (its value is stored by now). Caller holds the lock."""
        self.landed += 1
        if self.untimed is not None:
            self.untimed = self.landed
        recent = self._recent
        recent.pop(fp, None)
        recent[fp] = self.landed
        if len(recent) > _RECENT_LANDINGS:
            del recent[next(iter(recent))]

    def _landed_since(self, fp, seen):
        """Whether a flight of ``fp`` may have landed after the count was ``seen``.

        A miss that raced such a landing must look again rather than compute; a plain
        miss must not, or the cache would count the call's lookup twice.
        """
        with self._lock:
            if self.landed == seen:
                return False
            at = self._recent.get(fp)
            if at is not None:
                return at > seen
            # every landing since ``seen`` is still remembered only if there were few
            return self.landed - seen > len(self._recent)

    def _land(self, fp, flight):
        with self._lock:
            if self._flights.get(fp) is flight:
                del self._flights[fp]
            self._landing(fp)
        flight.done.set()

    def miss(self, cache, fp, args, kwargs, seen):
        """After a counted miss: compute once per key in this process (``seen``: ``landed`` before the lookup)."""
        self.note_arguments(args, kwargs)
        flight, leader = self._join(fp)
        if not leader:
            if self._wait(flight):
                return self.miss(cache, fp, args, kwargs, seen)
            return self.handed_out(flight.value, mine=False)
        return self._lead(fp, flight, lambda: self._compute_and_store(cache, fp, args, kwargs, seen))

    def _wait(self, flight):
        """Wait for the leader's result; True if the leader was interrupted, its error if it failed."""
        flight.done.wait()
        if flight.error is not None:
            if not isinstance(flight.error, Exception):
                # KeyboardInterrupt or SystemExit is its thread's business, not a result:
                # this caller computes instead.
                return True
            raise flight.error
        return False

    def _lead(self, fp, flight, produce):
        """Run ``produce()`` as the flight's leader; its value or error reaches the waiters."""
        try:
            value = produce()
        except BaseException as exc:
            flight.error = exc
            self._land(fp, flight)
            raise
        flight.value = value
        self._land(fp, flight)
        return self.handed_out(value, mine=True)

    def _count(self, hit):
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _compute_and_store(self, cache, fp, args, kwargs, seen):
        if self._landed_since(fp, seen):
            # Another leader stored the value between our lookup and our flight.
            value = self.lookup(cache, fp)
            if value is not MISSING:
                self._count(True)
                return value
        lease = getattr(cache, "get_or_compute", None)
        if lease is None:
            self._count(False)
            value = self.check_result(self.func(*args, **kwargs))
            self.store(cache, fp, value, args, kwargs)
            return value
        return self._leased_value(cache, lease, fp, args, kwargs)

    def leased(self, cache, fp, args, kwargs):
        """A call on a lease tier used directly: its lease is the call's one lookup."""
        self.note_arguments(args, kwargs)
        flight, leader = self._join(fp)
        if not leader:
            if self._wait(flight):
                return self.leased(cache, fp, args, kwargs)
            # This call's own lookup: the leader's value is stored by now.
            value = self.lookup(cache, fp)
            if value is MISSING:
                return self.handed_out(flight.value, mine=False)
            return self.handed_out(value, mine=self.copy)
        return self._lead(fp, flight, lambda: self._leased_value(cache, cache.get_or_compute, fp, args, kwargs))

    def _leased_value(self, cache, lease, fp, args, kwargs):
        # The lease looks the key up itself (a TieredCache only in its lease tier, told
        # that we missed), then computes in one process only.
        computed = []
        raised = []

        def compute():
            if not computed:
                try:
                    computed.append(self.check_result(self.func(*args, **kwargs)))
                except BaseException as exc:
                    raised.append(exc)
                    raise
            return computed[0]

        cost = self.cost(args, kwargs)
        options = {"missed": True} if isinstance(cache, TieredCache) else {}
        try:
            value = lease(fp, self.level, compute, dependencies=self.entry_dependencies,
                          computation_cost=cost, ttl=self.ttl, copy=self.copy, **options)
        except _TIER_ERRORS as exc:
            if raised and exc is raised[0]:
                raise  # the function's own OSError, not the tier's: never call it twice
            self.tier_failed(exc)
            value = compute()
        self._count(not computed)
        return value

    async def amiss(self, cache, fp, args, kwargs, seen):
        self.note_arguments(args, kwargs)
        loop = asyncio.get_running_loop()
        flights = self._flights
        with self._lock:
            future = flights.get(fp)
            leader = future is None or future.get_loop() is not loop
            if leader:
                future = flights[fp] = loop.create_future()
            else:
                self.waits += 1
        if not leader:
            try:
                value = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this caller was cancelled
                return await self.amiss(cache, fp, args, kwargs, seen)  # the leader was: compute here
            return self.handed_out(value, mine=False)
        try:
            value = self.lookup(cache, fp) if self._landed_since(fp, seen) else MISSING
            if value is MISSING:
                with self._lock:
                    self.misses += 1
                value = self.check_result(await self.func(*args, **kwargs))
                self.store(cache, fp, value, args, kwargs)
            else:
                with self._lock:
                    self.hits += 1
        except BaseException as exc:
            self._aland(fp, future)
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here so an unwaited future does not warn
            raise
        self._aland(fp, future)
        future.set_result(value)
        return self.handed_out(value, mine=True)

    def _aland(self, fp, future):
        with self._lock:
            if self._flights.get(fp) is future:
                del self._flights[fp]
            self._landing(fp)

    # introspection

    def cache_info(self):
        currsize = None
        if self.owns_cache:
            currsize = len(self.cache)
        return CacheInfo(self.hits, self.misses, self.maxsize_mb, currsize)

    def cache_clear(self):
        removed = self.resolve_cache().invalidate_by_dependency(self.function_dependency)
        with self._lock:
            self.hits = self.misses = self.errors = self.waits = 0
        return removed

    def cache_stats(self):
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors, "waits": self.waits}


def _wrap(func, memo):
    """Build the wrapper; the hot path (a hit) is inlined here for speed."""
    sig = memo.sig
    nparams = sig.npositional
    tails = sig.tails
    plain = sig.simple and memo.key is None and not memo.ignore and memo.typed
    level = memo.level
    copy = memo.copy
    token = memo.token
    slow_key = memo.slow_key

    def key_of(args, kwargs):
        # The common call, keyed without binding: positional arguments only. The values go
        # in as one tuple: two arguments take the vectorcall path, a splatted call would
        # build a new tuple.
        if plain and not kwargs and len(args) <= nparams:
            tail = tails[len(args)]
            if tail is not None:
                values = args + tail if tail else args
                if _tracked_types and not _tracked_types.isdisjoint(map(type, values)):
                    values = _swap_graphs(values)
                try:
                    return fingerprint(token, values)
                except UnhashableKeyError:
                    pass  # slow_key raises again, naming the argument
        return slow_key(args, kwargs)

    memo.key_of = key_of

    def call(args, kwargs):
        # Every call that is not the plain fast path below.
        cache = memo.resolve_cache()
        fp = memo.fingerprint_call(cache, args, kwargs)
        if _leases_directly(cache):
            return memo.leased(cache, fp, args, kwargs)
        seen = memo.landed
        value = memo.lookup(cache, fp)
        if value is not MISSING:
            memo.hits += 1
            return value
        return memo.miss(cache, fp, args, kwargs, seen)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(*args, **kwargs):
            # No lease here: the Redis lease blocks while another process computes.
            cache = memo.resolve_cache()
            fp = memo.fingerprint_call(cache, args, kwargs)
            seen = memo.landed
            value = memo.lookup(cache, fp)
            if value is not MISSING:
                memo.hits += 1
                return value
            return await memo.amiss(cache, fp, args, kwargs, seen)

    elif plain and not (memo.cache is not None and _leases_directly(memo.cache)):

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            cache = memo.cache
            if cache is None:
                if _global_leases:
                    return call(args, kwargs)
                cache = _global_cache
                if cache is None:
                    cache = get_global_cache()
            # key_of inlined for the common call: positional arguments, no tracked graph,
            # a function that has only been given scalars (so its hashing is not timed).
            seen = memo.untimed  # the landed count, read before the lookup (see _landed_since)
            if seen is not None and not kwargs and not _tracked_types and len(args) <= nparams \
                    and tails[len(args)] is not None:
                tail = tails[len(args)]
                try:
                    fp = fingerprint(token, args + tail if tail else args)
                except UnhashableKeyError:
                    fp = slow_key(args, kwargs)  # raises again, naming the argument
            else:
                seen = memo.landed
                fp = memo.fingerprint_call(cache, args, kwargs)
            try:
                # copy= only when set: a keyword argument costs on every hit
                value = cache.get(fp, level, MISSING, copy=True) if copy else cache.get(fp, level, MISSING)
            except _TIER_ERRORS as exc:
                memo.tier_failed(exc)
                value = MISSING
            if value is not MISSING:
                memo.hits += 1
                return value
            return memo.miss(cache, fp, args, kwargs, seen)

    else:

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return call(args, kwargs)

    wrapper.cache_info = memo.cache_info
    wrapper.cache_clear = memo.cache_clear
    wrapper.cache_stats = memo.cache_stats
    wrapper.cache_parameters = lambda: {
        "level": memo.level, "dependencies": set(memo.dependencies), "ttl": memo.ttl,
        "typed": memo.typed, "copy": memo.copy, "ignore": memo.ignore, "maxsize_mb": memo.maxsize_mb,
    }
    # upstream TNFR's introspection attributes
    wrapper._cache_level = memo.level
    wrapper._cache_dependencies = set(memo.dependencies)
    wrapper._cache_instance = memo.cache
    wrapper._cache_function_dependency = memo.function_dependency
    wrapper._is_cached = True
    wrapper.__signature__ = sig.signature
    return wrapper


def _decorate(func, **options):
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(_decorate(func.__func__, **options))
    if not callable(func):
        raise NotCacheableError(f"only functions can be cached, not {type(func).__name__}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise NotCacheableError(
            f"{getattr(func, '__qualname__', func)} is a generator function: a generator cannot be "
            f"cached (it is consumed once); cache a function that returns a list instead"
        )
    return _wrap(func, _Memo(func, **options))


def cache_tnfr_computation(level=CacheLevel.DERIVED_METRICS, dependencies=(), cost_estimator=None,
                           cache_instance=None, *, key=None, ignore=(), ttl=None, copy=False, typed=True):
    """Decorator that caches a TNFR computation (upstream's decorator, with its fixes).

    Parameters
    ----------
    level : CacheLevel or str, default DERIVED_METRICS
        The level entries are stored at.
    dependencies : collection of str, optional
        Names (``{"graph_topology", "node_vf"}``) whose invalidation removes the entries.
    cost_estimator : callable, optional
        Called with the function's arguments; its float result is the entry's
        computation cost (eviction keeps costly entries longer). 1.0 when None.
    cache_instance : CacheTier, optional
        Any tier or a ``TieredCache``; the process-wide cache (:func:`get_global_cache`,
        looked up at each call) when None.
    key : callable, optional
        Called with the function's arguments; its result replaces them in the key.
    ignore : collection of str, optional
        Parameters left out of the key (``ignore=("self",)`` on a method whose result
        does not depend on the instance, or a ``verbose`` flag).
    ttl : float, optional
        Seconds an entry lives.
    copy : bool, default False
        Return private writeable copies of arrays instead of read-only ones.
    typed : bool, default True
        Arguments of different types are different keys (``1``, ``1.0``, ``True``);
        False lets equal numbers passed as arguments (not inside containers) share an
        entry as :func:`functools.lru_cache` does.

    Returns
    -------
    callable
        The decorator. The wrapped function keeps its name, docstring, signature and
        ``__wrapped__`` and gains ``cache_info()``, ``cache_clear()``, ``cache_stats()``
        and ``cache_parameters()``.

    Notes
    -----
    A stored None is a hit; exceptions are never cached; ``async def`` functions cache
    their results (the cache is read synchronously: a memory hit costs microseconds, a
    disk or Redis tier holds the event loop for its round trip). Concurrent calls with
    one key compute once in this process (the others wait for that result or
    exception), and across processes for synchronous functions when the cache offers
    ``get_or_compute`` (the Redis tier, or a ``TieredCache`` holding it). A cache
    tier that fails makes the call a miss: the result is computed, the error counted.
    Each call is one lookup in the cache's metrics (one hit or one miss, a lease
    included; a call whose miss raced another thread's computation of the same key
    looks once more instead of computing). The time spent fingerprinting a call's arguments goes to the cache's
    metrics (``record_hash_time``) on the first call and, once the function has been
    given an argument that is not a plain number, string or None (an array, a graph, a
    container), on every call; calls with scalars only are not timed, which keeps their
    hit near ``cachetools.cached``'s.
    On methods, ``self`` must define ``__fastcache_key__()`` or be named in ``ignore``;
    the cache keeps no reference to instances.

    Examples
    --------
    >>> from tnfr_fastcache import cache_tnfr_computation, CacheLevel
    >>> @cache_tnfr_computation(CacheLevel.DERIVED_METRICS, {"graph_topology"})
    ... def degree_sum(G):
    ...     return sum(d for _, d in G.degree())
    """
    if callable(level) and not isinstance(level, (str, CacheLevel)):
        return cache_tnfr_computation()(level)  # used bare: @cache_tnfr_computation
    options = dict(cache=cache_instance, level=level, dependencies=dependencies, cost_estimator=cost_estimator,
                   key=key, ignore=ignore, ttl=ttl, copy=copy, typed=typed)
    # Bad options fail here, not when the decorator is applied or at the first call.
    _check_options(key, ignore)
    as_level(level)
    _check_dependencies(dependencies)
    _check_ttl(ttl)

    def decorator(func):
        return _decorate(func, **options)

    return decorator


def cached(cache=None, *, maxsize_mb=128, key=None, ignore=(), ttl=None, typed=True, copy=False,
           level=DEFAULT_LEVEL):
    """Memoize a function: the drop-in for :func:`functools.lru_cache` that takes arrays and graphs.

    Usable bare (``@cached``) or called (``@cached(maxsize_mb=64)``, ``@cached(tier)``).

    Parameters
    ----------
    cache : CacheTier, optional
        Where entries go. When None the function gets its own memory tier of
        ``maxsize_mb`` megabytes.
    maxsize_mb : float, default 128
        Budget of the function's own memory tier (only without ``cache``).
    key, ignore, ttl, typed, copy, level
        As in :func:`cache_tnfr_computation`.

    Returns
    -------
    callable
        The wrapped function, or a decorator when called with options.

    Examples
    --------
    >>> import numpy as np
    >>> from tnfr_fastcache import cached
    >>> @cached
    ... def row_sums(w):
    ...     return w.sum(axis=1)
    >>> row_sums(np.eye(3)).tolist()
    [1.0, 1.0, 1.0]
    """
    if cache is not None and not isinstance(cache, CacheTier):
        if callable(cache):
            return cached()(cache)
        raise InvalidArgumentError(f"cached() takes a CacheTier as cache=, not {type(cache).__name__}")
    if cache is not None and maxsize_mb != 128:
        raise InvalidArgumentError("pass either cache= or maxsize_mb=, not both: maxsize_mb sizes a private cache")
    if not (isinstance(maxsize_mb, (int, float)) and not isinstance(maxsize_mb, bool) and maxsize_mb > 0):
        raise InvalidArgumentError(f"maxsize_mb must be a positive number, not {maxsize_mb!r}")
    _check_options(key, ignore)
    as_level(level)
    _check_ttl(ttl)

    def decorator(func):
        own = cache
        if own is None:
            from .backends.memory import TNFRHierarchicalCache

            own = TNFRHierarchicalCache(max_memory_mb=maxsize_mb)
        return _decorate(func, cache=own, level=level, dependencies=(), cost_estimator=None, key=key,
                         ignore=ignore, ttl=ttl, copy=copy, typed=typed,
                         maxsize_mb=maxsize_mb if cache is None else None, owns_cache=cache is None)

    return decorator


def invalidate_function_cache(func):
    """Remove the entries of one decorated function from its own cache.

    Parameters
    ----------
    func : callable
        A function decorated with :func:`cache_tnfr_computation` or :func:`cached`.

    Returns
    -------
    int
        Entries removed.

    Raises
    ------
    InvalidArgumentError
        If ``func`` is not a cached function.
    """
    if not getattr(func, "_is_cached", False):
        raise InvalidArgumentError(
            f"{getattr(func, '__qualname__', func)!s} is not cached; decorate it with "
            f"@cache_tnfr_computation(...) or @cached first"
        )
    cache = func._cache_instance if func._cache_instance is not None else get_global_cache()
    return cache.invalidate_by_dependency(func._cache_function_dependency)
