"""Handler registration: the `@app.task(...)` decorator, handler specs and loading modules by path.

A handler takes the task's payload as its one positional argument and returns a JSON-serialisable
result. Declaring a keyword parameter named `task` also gives it the (read-only) `Task` record,
e.g. for its id or attempt number. Coroutine functions run on the event loop; plain functions run
in a bounded thread pool, or in a process pool when declared `executor="process"` (they must then
be importable module-level functions, and `task` is not passed). Handlers that run in this process
also reach the running task and their tenant's cache through `hulk.context`.

A task type declared with `cache_ttl=<seconds>` is cacheable: when the engine has a cache, an attempt
first looks the result up under `hulk.keys.result_key(type, canonical_payload(payload))` in the
tenant's namespace; a hit succeeds at once without calling the handler (the task says `cached`), a
miss runs the handler and stores a successful result for `cache_ttl` seconds (failures are never
stored). Use it only for handlers whose result depends on the payload alone.

Handler modules load by import path from configuration, the way Celery's `-A myapp.tasks` does:
`"myapp.tasks"` imports the module and takes the handlers registered on its module-level
`registry` or `app`, and those registered with the module-level `hulk.engine.task` decorator;
`"myapp.tasks:app"` names the object to take them from.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from hulk.engine.config import BackoffPolicy, BreakerPolicy
from hulk.engine.errors import UnknownTaskType

__all__ = ["Executor", "Registry", "TaskSpec", "shared", "task"]

Executor = Literal["loop", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered handler and its policies (None fields take the engine's defaults).

    Attributes:
        name: the task type it handles.
        fn: the handler.
        executor: "loop" (coroutine function), "thread" (sync function) or "process".
        timeout: seconds one attempt may run.
        retries: attempts after the first one.
        backoff: delays between attempts.
        breaker: name of the circuit breaker guarding it (None: no breaker).
        concurrency: most attempts of this type running at once (None: no limit).
        pass_task: the handler declares a `task` parameter.
        cache_ttl: seconds a successful result is reused for an identical (type, payload) task of
            the same tenant (None: not cacheable).
    """

    name: str
    fn: Callable[..., Any]
    executor: Executor
    timeout: float | None = None
    retries: int | None = None
    backoff: BackoffPolicy | None = None
    breaker: str | None = None
    concurrency: int | None = None
    pass_task: bool = False
    cache_ttl: float | None = None


def _accepts_task(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    param = params.get("task")
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


class Registry:
    """The handlers an engine knows, by task type, and the named breaker policies they use."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self._breakers: dict[str, BreakerPolicy] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        """The registered task types, sorted."""
        return sorted(self._specs)

    def get(self, name: str) -> TaskSpec:
        """The spec of task type `name`.

        Raises:
            UnknownTaskType: nothing is registered under `name`.
        """
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTaskType(name) from None

    @property
    def breakers(self) -> dict[str, BreakerPolicy]:
        """Named breaker policies (a copy)."""
        return dict(self._breakers)

    def breaker(self, name: str, policy: BreakerPolicy | None = None) -> str:
        """Declares a named breaker shared by every handler that names it (e.g. one per dependency).

        Args:
            name: the breaker's name.
            policy: its settings (None: defaults).

        Returns:
            `name`, for use as `breaker=` in `task()`.

        Raises:
            ValueError: `name` is already declared with a different policy.
        """
        policy = policy if policy is not None else BreakerPolicy()
        known = self._breakers.get(name)
        if known is not None and known != policy:
            raise ValueError(f"breaker {name!r} is already declared with another policy")
        self._breakers[name] = policy
        return name

    def register(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: BackoffPolicy | None = None,
        breaker: str | BreakerPolicy | bool | None = None,
        concurrency: int | None = None,
        executor: Executor | None = None,
        cache_ttl: float | None = None,
    ) -> TaskSpec:
        """Registers `fn` as the handler of task type `name`.

        Args:
            fn: a coroutine function or a plain function.
            name: the task type (default: "module.qualname" of `fn`).
            timeout: seconds one attempt may run (None: engine default).
            retries: attempts after the first one (None: engine default).
            backoff: delays between attempts (None: engine default).
            breaker: a breaker name (shared, see `breaker()`), a `BreakerPolicy` or True for a
                breaker of its own named after the task type, None or False for none.
            concurrency: most attempts of this type running at once.
            executor: "process" to run a CPU-bound sync function in the process pool; by default
                coroutine functions run on the loop and sync functions in the thread pool.
            cache_ttl: seconds a successful result is reused for an identical task of the same
                tenant, when the engine has a cache (None: not cacheable; see the module docs).

        Returns:
            The spec.

        Raises:
            ValueError: a bad option, or `name` already registered to another function.
        """
        name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"task name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise ValueError(f"handler of {name!r} must be callable, got {fn!r}")
        is_async = inspect.iscoroutinefunction(fn)
        if executor is None:
            executor = "loop" if is_async else "thread"
        elif executor not in ("loop", "thread", "process"):
            raise ValueError(f"executor of {name!r} must be loop, thread or process, got {executor!r}")
        elif (executor == "loop") != is_async:
            raise ValueError(
                f"executor {executor!r} of {name!r} needs a {'plain' if is_async else 'coroutine'} function"
            )
        if timeout is not None and not 0 < timeout < float("inf"):
            raise ValueError(f"timeout of {name!r} must be a finite number of seconds > 0, got {timeout!r}")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries of {name!r} must be an integer >= 0, got {retries!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency of {name!r} must be an integer >= 1, got {concurrency!r}")
        if cache_ttl is not None and (
            isinstance(cache_ttl, bool) or not isinstance(cache_ttl, int | float) or not 0 < cache_ttl < float("inf")
        ):
            raise ValueError(f"cache_ttl of {name!r} must be a finite number of seconds > 0, got {cache_ttl!r}")
        breaker_name: str | None
        if breaker is None or breaker is False:
            breaker_name = None
        elif breaker is True:
            breaker_name = self.breaker(name)
        elif isinstance(breaker, BreakerPolicy):
            breaker_name = self.breaker(name, breaker)
        elif isinstance(breaker, str) and breaker:
            breaker_name = breaker
            self._breakers.setdefault(breaker, BreakerPolicy())
        else:
            raise ValueError(f"breaker of {name!r} must be a name, a BreakerPolicy or a bool, got {breaker!r}")
        spec = TaskSpec(
            name=name,
            fn=fn,
            executor=executor,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            breaker=breaker_name,
            concurrency=concurrency,
            pass_task=executor != "process" and _accepts_task(fn),
            cache_ttl=None if cache_ttl is None else float(cache_ttl),
        )
        self._add(spec)
        return spec

    def _add(self, spec: TaskSpec) -> None:
        known = self._specs.get(spec.name)
        if known is not None and known.fn is not spec.fn:
            raise ValueError(f"task {spec.name!r} is already registered to {known.fn!r}")
        self._specs[spec.name] = spec

    def task(
        self,
        name: str | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: BackoffPolicy | None = None,
        breaker: str | BreakerPolicy | bool | None = None,
        concurrency: int | None = None,
        executor: Executor | None = None,
        cache_ttl: float | None = None,
    ) -> Callable[[F], F]:
        """Decorator form of `register`; returns the function unchanged.

        Example:
            >>> registry = Registry()
            >>> @registry.task("email.send", timeout=5, retries=2)
            ... async def send(payload):
            ...     return {"sent": payload["to"]}
            >>> "email.send" in registry
            True
        """

        def decorate(fn: F) -> F:
            self.register(
                fn,
                name,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
                breaker=breaker,
                concurrency=concurrency,
                executor=executor,
                cache_ttl=cache_ttl,
            )
            return fn

        return decorate

    def merge(self, other: Registry) -> None:
        """Adds every handler and breaker policy of `other`.

        Raises:
            ValueError: a name registered in both to different functions or policies.
        """
        for name, policy in other._breakers.items():
            self.breaker(name, policy)
        for spec in other:
            self._add(spec)

    def load(self, path: str) -> None:
        """Imports a handler module by path and registers its handlers.

        Args:
            path: "package.module" (handlers of its module-level `registry` or `app`, and those of
                the shared `hulk.engine.task` decorator) or "package.module:attr" (those of `attr`,
                a `Registry` or an object with a `registry` attribute).

        Raises:
            ImportError: the module cannot be imported.
            ValueError: `attr` holds no registry, or two handlers conflict.
        """
        module_name, _, attr = path.partition(":")
        module = importlib.import_module(module_name)
        if attr:
            found = _registry_of(getattr(module, attr, None))
            if found is None:
                raise ValueError(f"{path!r} names no Registry (nor an object with a .registry)")
            self.merge(found)
            return
        for candidate in ("registry", "app"):
            found = _registry_of(getattr(module, candidate, None))
            if found is not None and found is not self:
                self.merge(found)
        if shared is not self:
            self.merge(shared)


def _registry_of(obj: object) -> Registry | None:
    if isinstance(obj, Registry):
        return obj
    inner = getattr(obj, "registry", None)
    return inner if isinstance(inner, Registry) else None


shared = Registry()
"""Handlers registered with the module-level `task` decorator (picked up by `Registry.load`)."""

task = shared.task
"""`@hulk.engine.task(...)`: registers into `shared`, for handler modules that have no app object."""
