"""``POST /v1/messages``, top to bottom: decode → route → (cache) → attempts with retries,
circuit breakers and rate limits → a whole response or a stream → record.

The adapter (``upstream/``) turns the decoded request into its upstream's payload and the
upstream's answer back into Anthropic bytes, through a translator (``translate/``). Everything
that may go wrong on the way is a ``ProxyError``, which ``app.py`` answers as an Anthropic error
envelope; a stream that breaks once bytes reached the client ends with an SSE ``error`` event.
Resilience rules are in ``resilience.py`` and docs/design.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from typing import Any

import msgspec
import orjson

from . import tokens
from .access import require_json
from .cache import ResponseCache
from .config import Settings
from .errors import ProxyError, invalid_request
from .metrics import Metrics
from .ops import Drain
from .ratelimit import RateLimiter
from .recording import Recorder
from .resilience import RETRY_STATUSES, parse_retry_after
from .routing import DEFAULT_UPSTREAM, Route, Router, Traits
from .schemas.anthropic import MessagesRequest, decode_messages_request, decode_request, web_search_tool
from .serving import ClientDisconnected, DisconnectWatch, Request, Response, StreamResponse
from .translate.events import PING_EVENT, error_event
from .upstream.base import Exchange, Upstream
from .upstream.registry import Upstreams

log = logging.getLogger("ccproxy.pipeline")

# error types a stream records when its upstream failed mid-way (counted by the circuit breaker)
STREAM_FAULTS = frozenset({"timeout_error", "api_error", "overloaded_error"})
# Our count (tiktoken's cl100k) is not the upstream's tokenizer: a prompt is refused only when it
# is over the window by more than that difference could be.
WINDOW_MARGIN = 0.9


class Call:
    """One request on its way upstream: the decoded request and body until the payload exists
    (kept longer only when a fallback upstream may need its own translation)."""

    __slots__ = ("_payloads", "body", "estimated_tokens", "exchange", "keep", "parsed", "rate_entry")

    def __init__(self, parsed: MessagesRequest, body: bytes, exchange: Exchange) -> None:
        self.parsed: MessagesRequest | None = parsed
        self.body: bytes | None = body
        self.exchange = exchange
        self.keep = bool(exchange.route.fallbacks)
        self.estimated_tokens = len(body) / 4 + (parsed.max_tokens or 0)
        self._payloads: dict[str, bytes] = {}
        self.rate_entry: tuple[RateLimiter, list[float]] | None = None

    def json(self) -> Any:
        assert self.body is not None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:  # integers beyond a double (valid JSON, decoded already)
            return msgspec.json.decode(self.body)

    def release(self) -> None:
        """The upstream answered: no attempt will need the request again (a stream can run for
        minutes, and a turn's payload is ~100 KB)."""
        self._payloads.clear()
        self.parsed = self.body = None

    def payload(self, upstream: Upstream) -> bytes:
        name = self.exchange.route.upstream
        payload = self._payloads.get(name)
        if payload is None:
            if self.body is None or self.parsed is None:
                raise ProxyError(500, "request released before its payload was built", "api_error")
            payload = self._payloads[name] = upstream.prepare(self.parsed, self.body, self.exchange)
            if not self.keep:
                self.parsed = self.body = None
        return payload


class Held:
    """The circuit breakers that let one request through, and what each should hear: one
    outcome per request and upstream (its last attempt there), not one per attempt, so five
    failed requests open a circuit whatever their retries did. ``settle`` is the only place a
    request's outcome reaches a breaker; a stream's is settled when the stream ends."""

    __slots__ = ("faults", "upstreams")

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self.faults: dict[str, bool | None] = {}  # upstream → fault of its last attempt (None: none yet)

    def holds(self, name: str) -> bool:
        return name in self.faults

    def hold(self, name: str) -> None:
        self.faults.setdefault(name, None)

    def outcome(self, name: str, fault: bool | None) -> None:
        self.faults[name] = fault

    def settle(self, keep: str | None = None) -> None:
        """Tell every held breaker but ``keep``'s (a stream still running) what happened."""
        for name, fault in list(self.faults.items()):
            if name == keep:
                continue
            breaker = self.upstreams.breaker(name)
            if fault is None:
                breaker.release()  # nothing reached the upstream, or the client left
            else:
                breaker.record(fault=fault)
            del self.faults[name]


class Messages:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        upstreams: Upstreams,
        cache: ResponseCache | None,
        metrics: Metrics,
        recorder: Recorder,
        drain: Drain,
    ) -> None:
        self.settings = settings
        self.router = router
        self.upstreams = upstreams
        self.cache = cache
        self.metrics = metrics
        self.recorder = recorder
        self.drain = drain
        self.waiting = DisconnectWatch()  # requests waiting on their upstream, for disconnects

    async def __call__(self, req: Request) -> Response | StreamResponse:
        started = time.perf_counter()
        if self.drain.draining:
            raise ProxyError(503, "ccproxy is shutting down; send the request again", "overloaded_error")
        require_json(req)
        body = await req.body(self.settings.max_request_bytes)
        parsed = decode_request(decode_messages_request, body)
        if not parsed.messages:
            raise invalid_request("messages: at least one message is required")
        if parsed.max_tokens < 1:
            raise invalid_request("max_tokens: must be at least 1")
        exchange = Exchange(req.request_id, await self._route(parsed, len(body)), len(body), parsed.stream)
        self.recorder.describe(req, parsed, body, exchange)
        if exchange.route.upstream != DEFAULT_UPSTREAM or exchange.route.fallbacks:
            exchange.keep_client_side(req)
        call = Call(parsed, body, exchange)
        del parsed, body  # a request can wait minutes on the upstream; the Call keeps what it needs
        self.drain.begin()
        held = Held(self.upstreams)
        try:
            outcome = await self._answer(req, call, held)
            call.release()
        except BaseException as exc:
            held.settle()
            if isinstance(exc, ProxyError):
                exchange.status, exchange.error_type, exchange.error_message = exc.status, exc.error_type, exc.message
            elif isinstance(exc, (asyncio.CancelledError, ClientDisconnected)):
                exchange.status, exchange.error_type = 499, "client_disconnected"
            else:  # a bug: logged here, answered as a 500 envelope by the app
                exchange.status, exchange.error_type = 500, "api_error"
                exchange.error_message = f"internal error: {type(exc).__name__}"
            self._finish(call, started)
            raise
        if isinstance(outcome, Response):
            held.settle()
            exchange.status = outcome.status
            if self.recorder.keeps_bodies:
                exchange.response_body = self.recorder.loggable(outcome.body)
            self._finish(call, started)
            return outcome

        def on_close(failure: BaseException | None) -> None:
            if isinstance(failure, ClientDisconnected):
                exchange.status, exchange.error_type = 499, "client_disconnected"
                fault = None  # says nothing about the upstream
            else:
                if failure is not None:
                    exchange.error_type = "api_error"
                    exchange.error_message = f"stream failed: {type(failure).__name__}"
                # the upstream failed mid-stream (reset, idle timeout, error chunk) or not
                fault = failure is None and exchange.error_type in STREAM_FAULTS
            held.outcome(exchange.route.upstream, fault)
            held.settle()
            self._finish(call, started)

        held.settle(keep=exchange.route.upstream)  # (a failed attempt elsewhere before the stream)
        events = outcome if not self.settings.total_timeout else self._deadline_stream(outcome, exchange, started)
        if self.recorder.keeps_bodies:
            events = self.recorder.captured(events, exchange)
        return StreamResponse(
            events,
            on_close,
            ping=PING_EVENT,
            ping_interval=self.settings.ping_interval,
            on_error=lambda exc: error_event("api_error", "internal proxy error"),
            headers=exchange.relay_headers,
        )

    async def _route(self, parsed: MessagesRequest, size: int) -> Route:
        """The request's route: by model id, and by what it needs when rules ask (traits). A
        prompt beyond the routed model's context window goes to a long-context rule, or is
        refused at once with Anthropic's "prompt is too long" (Claude Code compacts on it)."""
        router = self.router
        traits = None
        if router.uses_traits:
            count = (
                await tokens.count_request_async(parsed, size) if router.count_from and size >= router.count_from else 0
            )
            traits = request_traits(parsed, count)
        route = router.route(parsed.model, traits)
        window = route.context_window
        if window is None or size <= window:  # (a prompt has fewer tokens than bytes: it fits)
            return route
        count = (
            traits.input_tokens
            if traits is not None and traits.input_tokens
            else await tokens.count_request_async(parsed, size)
        )
        if count * WINDOW_MARGIN <= window:
            return route
        longer = router.long_context_route(
            parsed.model, replace(traits or request_traits(parsed, 0), input_tokens=count)
        )
        if longer is None:
            raise invalid_request(f"prompt is too long: {count} tokens > {window} maximum")
        return longer

    async def _answer(self, req: Request, call: Call, held: Held) -> Response | AsyncIterator[bytes]:
        """The response cache in front of the attempts (whole answers only); a client that
        leaves while the request waits cancels the wait."""
        exchange = call.exchange
        if self.cache is not None and not exchange.stream:
            route = exchange.route
            scope = self.upstreams.adapter(route.upstream).cache_scope(exchange)
            key = ResponseCache.key(call.json(), route.upstream, route.upstream_model, scope)
            waiting = self.waiting.enter(req)
            try:
                fetch = lambda: self._within_total(self._attempts(call, held))  # noqa: E731
                outcome, how = await self.cache.get_or_fetch(key, fetch)
            finally:
                self.waiting.leave(waiting)  # (raises ClientDisconnected then)
            exchange.cache = how
            if how != "miss":
                exchange.status = outcome.status
                exchange.usage = {}
            return outcome
        waiting = self.waiting.enter(req)
        try:
            return await self._within_total(self._attempts(call, held))
        finally:
            self.waiting.leave(waiting)

    async def _attempts(self, call: Call, held: Held) -> Response | AsyncIterator[bytes]:
        """Send the request upstream: retries (before anything reached the client), circuit
        breaking with fallback upstreams, and rate limiting. See resilience.py for the rules."""
        exchange = call.exchange
        primary = exchange.route
        upstreams = self.upstreams
        upstreams.retry_budget.deposit()
        retry = 0
        while True:
            route = self._pick(primary, held)
            if route is not exchange.route:
                self.metrics.fallbacks += route is not primary
                exchange.route = route
            limiter = upstreams.limiters.get(route.upstream)
            upstream = upstreams.adapter(route.upstream)
            payload = call.payload(upstream)
            entry = await limiter.acquire(call.estimated_tokens) if limiter is not None else None
            exchange.upstream_status = None
            error: ProxyError | None = None
            result: Any = None
            began = time.perf_counter()
            try:
                if exchange.stream:
                    result = await self._first_byte(upstream.open_stream(payload, exchange))
                    self.metrics.first_byte.observe(time.perf_counter() - began)
                else:
                    result = await upstream.create(payload, exchange)
            except ProxyError as exc:
                error = exc
            status = exchange.upstream_status
            if not (status is None and error is not None and error.status < 500):
                # an upstream fault: it answered 5xx, or never answered (we map that to 502/504);
                # a refusal before sending (e.g. no key for the upstream) says nothing about it
                fault = (status or 0) >= 500 or (error is not None and error.status >= 500)
                held.outcome(route.upstream, fault)
            if limiter is not None and entry is not None:
                limiter.adapt(throttled=status == 429)
                call.rate_entry = (limiter, entry)
            if error is None and not isinstance(result, Response):
                # A stream: from here on bytes reach the client, no more retries. Its breaker
                # hears the outcome when the stream ends (on_close), not now.
                held.outcome(route.upstream, None)
                return result
            if error is None and result.status < 400:
                return result
            unanswered = status is None and error is not None and error.status in (502, 504)
            retryable = status in RETRY_STATUSES or unanswered
            if retryable:
                headers = error.headers if error is not None else result.headers
                after = parse_retry_after(next((v for k, v in headers if k.lower() == "retry-after"), None))
                delay = upstreams.retry_policy.delay(retry, after)
                if delay is not None and upstreams.retry_budget.withdraw():
                    retry += 1
                    self.metrics.retries += 1
                    reason = status or (error.message if error else "error")
                    log.info("retrying %s (attempt %d) in %.2f s after %s", route.upstream, retry + 1, delay, reason)
                    await asyncio.sleep(delay)
                    continue
            if error is not None:
                raise error
            return result

    def _pick(self, primary: Route, held: Held) -> Route:
        """The primary route, or the first fallback whose circuit lets a request through (a
        retry stays on an upstream that already let this request through)."""
        for route in (primary, *primary.fallbacks):
            if held.holds(route.upstream) or self.upstreams.breaker(route.upstream).allow():
                held.hold(route.upstream)
                return route
        breaker = self.upstreams.breaker(primary.upstream)
        wait = max(1, round(breaker.retry_in()))
        raise ProxyError(
            503,
            f"upstream {primary.upstream!r} is unavailable: its circuit is open after {breaker.failures} consecutive "
            f"failures; retry in {wait} s",
            "overloaded_error",
            [("retry-after", str(wait))],
        )

    # --- deadlines ------------------------------------------------------------------------------

    async def _first_byte(self, opening: Awaitable[Any]) -> Any:
        limit = self.settings.first_byte_timeout
        return await within(
            opening, limit, f"the upstream did not answer within CCPROXY_FIRST_BYTE_TIMEOUT ({limit:g} s)"
        )

    async def _within_total(self, work: Awaitable[Any]) -> Any:
        """Non-streaming requests as a whole, and streams until the upstream answered, within
        CCPROXY_TOTAL_TIMEOUT (the rest of a stream is bounded in _deadline_stream)."""
        total = self.settings.total_timeout
        if not total:
            return await work
        return await within(work, total, f"the request took longer than CCPROXY_TOTAL_TIMEOUT ({total:g} s)")

    async def _deadline_stream(
        self, events: AsyncIterator[bytes], exchange: Exchange, started: float
    ) -> AsyncIterator[bytes]:
        deadline = started + self.settings.total_timeout
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.perf_counter()):
                async for chunk in events:
                    yield chunk
        except TimeoutError:
            exchange.error_type = "timeout_error"
            exchange.error_message = (
                f"the stream took longer than CCPROXY_TOTAL_TIMEOUT ({self.settings.total_timeout:g} s)"
            )
            yield error_event("timeout_error", exchange.error_message)
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    # --- the end ------------------------------------------------------------------------------

    def _finish(self, call: Call, started: float) -> None:
        """Once per request, whatever its outcome: correct the rate window by the true usage,
        count it, write it to the request log, and let a drain know."""
        exchange = call.exchange
        if call.rate_entry is not None and exchange.usage:
            limiter, entry = call.rate_entry
            limiter.correct(entry, exchange.usage.get("input_tokens", 0) + exchange.usage.get("output_tokens", 0))
        seconds = time.perf_counter() - started
        self.metrics.record(
            exchange.route.upstream, exchange.status, exchange.error_type, seconds, exchange.stream, exchange.usage
        )
        self.recorder.record(exchange, seconds)
        self.drain.end()


def request_traits(parsed: MessagesRequest, input_tokens: int) -> Traits:
    thinking = parsed.thinking.get("type") in ("enabled", "adaptive") if isinstance(parsed.thinking, dict) else False
    return Traits(
        input_tokens=input_tokens,
        thinking=thinking,
        web_search=web_search_tool(parsed.tools) is not None,
        images=any(_has_image(m.content) for m in parsed.messages),
        background="haiku" in parsed.model.lower(),
    )


def _has_image(content: Any) -> bool:
    if isinstance(content, str):
        return False
    for block in content:
        if isinstance(block, dict):
            if block.get("type") == "image":
                return True
            inner = block.get("content") if block.get("type") == "tool_result" else None
            if isinstance(inner, list) and _has_image(inner):
                return True
    return False


async def within(work: Awaitable[Any], seconds: float, message: str) -> Any:
    """``work``, or a 504 timeout_error envelope saying ``message`` once ``seconds`` passed."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise ProxyError(504, message, "timeout_error") from None
