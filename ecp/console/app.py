"""The console's ASGI application: pages over Temporal, the ledger and the trust store.

The console holds no signing key. Its pages read; the only writes are
relays: an approval an approver signed in their own browser is delivered to
the workflow's ``ecp.approve`` update (``approvals.py``), and sign-in and
sign-out set cookies. Receipts are verified by the reader's browser
(``static/verify.js``); the server only hands them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, quote, urlencode

import networkx as nx
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from temporalio.service import RPCError

from ecp._connect import TemporalUnreachableError, connect
from ecp._settings import Settings
from ecp.authority._truststore import KeyRole, TrustStore
from ecp.authority.errors import AuthorityError
from ecp.console._render import PAGE_CONTEXT, render, visible
from ecp.console._svg import chart_svg
from ecp.console.approvals import relay_approval, relay_passkey_approval
from ecp.console.audit import LedgerAuditor
from ecp.console.charts import (
    GOVERNANCE_CHARTS,
    HEALTH_CHARTS,
    LEDGER_CAP,
    WINDOWS,
    Chart,
    Window,
    approval_waits,
    governed_activity,
    ledger_charts,
    window_named,
)
from ecp.console.errors import ConsoleError, LedgerNotReadyError
from ecp.console.governance import (
    ExecutionRow,
    GovernanceFilter,
    claim_of,
    describe_execution,
    list_executions,
    shell_quote,
    with_ledger_word,
)
from ecp.console.health import collect_health
from ecp.console.limits import (
    DEFAULT_LIMITS,
    LineageGate,
    LineageLimits,
    LineageTooLargeError,
    until_disconnect,
)
from ecp.console.lineage_view import (
    EXPORTS,
    export_lineage,
    export_svg,
    lineage_view,
    load_lineage_graph,
)
from ecp.console.proofs import consistency_document, parse_size
from ecp.console.signin import (
    LOGIN_COOKIE,
    ROLES,
    SESSION_COOKIE,
    SignIn,
    SignInConfig,
    SignInError,
    Visitor,
    cookies_of,
    set_cookie,
    signin_from_settings,
)
from ecp.console.vouch import MAX_ENTRIES_PER_PAGE, Claim, Vouch, vouch_for
from ecp.lineage._crosscheck import CrossCheckReport
from ecp.lineage.graph._export import ExportFormat
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import EntryNotFoundError, LineageError, NoCheckpointError

__all__ = ["HEALTH_REFRESH_SECONDS", "VERIFY_EVERY", "create_app"]

#: The full ledger verification on the health page runs at most this often.
VERIFY_EVERY: Final = timedelta(minutes=10)

#: The health page reloads itself this often (a meta refresh: no script needed).
HEALTH_REFRESH_SECONDS: Final = 10
_STATIC: Final = Path(__file__).resolve().parent / "static"
# Scripts and styles only from this origin, nothing inline, no framing, no
# outbound connections: a receipt pasted into the page cannot leave it.
_SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)


class _SecurityHeaders:
    """Adds :data:`_SECURITY_HEADERS` to every HTTP response, error pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: The visitor when the console has no sign-in configured: every page, as before.
_EVERYONE: Final = Visitor("", frozenset(ROLES))


def _need(path: str, method: str = "GET") -> str:
    """What a path needs: ``open``, ``public`` (the Proof Viewer), ``list`` or a role."""
    if method == "POST" and path.startswith("/governance/") and path.endswith("/approve"):
        return "approver"
    if path == "/passkeys/register":
        return "approver"
    if path.startswith("/static/") or path in ("/login", "/auth/callback", "/logout"):
        return "open"
    if path in ("/proofs", "/api/consistency"):
        return "public"
    if path in ("/", "/governance"):
        return "list"
    if path.startswith("/lineage/") and "/export/" in path:
        return "auditor"
    return "viewer"


class _Gatekeeper:
    """Lets a request through only when its visitor may see the page (see :func:`_need`).

    Without a sign-in configuration every visitor may see everything (the
    console's behaviour before sign-in existed). In public mode a signed-out
    visitor sees the Proof Viewer and the redacted list.
    """

    def __init__(self, app: ASGIApp, signin: SignIn | None) -> None:
        self.app = app
        self.signin = signin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.signin is None:
            visitor = _EVERYONE
        else:
            visitor = self.signin.visitor(cookies_of(scope.get("headers", [])))
        scope.setdefault("state", {})["visitor"] = visitor
        token = PAGE_CONTEXT.set({"visitor": visitor, "signin_enabled": self.signin is not None})
        try:
            refusal = self._refusal(scope, visitor)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await self.app(scope, receive, send)
        finally:
            PAGE_CONTEXT.reset(token)

    def _refusal(self, scope: Scope, visitor: Visitor) -> Response | None:
        need = _need(str(scope.get("path", "")), str(scope.get("method", "GET")))
        public = self.signin is not None and self.signin.config.public
        if need == "open" or (visitor.may("viewer") and need in ("public", "list", "viewer")):
            return None
        if need in ("public", "list") and public:
            return None
        if need in ("auditor", "approver") and visitor.may(need):
            return None
        request = Request(scope)
        if visitor.signed_in:
            return _error_page(request, 403, f"Your roles do not include {need}, which this needs.")
        if _wants_json(request):
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        path = str(scope.get("path", "/"))
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def _visitor(request: Request) -> Visitor:
    visitor = request.scope.get("state", {}).get("visitor")
    return visitor if isinstance(visitor, Visitor) else _EVERYONE


@dataclass
class _Deps:
    """Lazily opened connections; a failure is remembered only until the next request."""

    settings: Settings
    temporal_ui: str | None
    client: Client | None = None
    ledger: Ledger | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    auditor: LedgerAuditor = field(default_factory=lambda: LedgerAuditor(VERIFY_EVERY))
    lineage: LineageGate = field(default_factory=LineageGate)
    signin: SignIn | None = None
    #: The CSRF token of every form when nobody signs in (no session to hold one).
    anon_csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    async def temporal(self) -> Client:
        """The Temporal client, connecting on first use.

        Raises:
            TemporalUnreachableError: nothing answers at the configured address.
        """
        async with self.lock:
            if self.client is None:
                self.client = await connect(self.settings, tracing=False)
            return self.client

    async def temporal_or_reason(self) -> tuple[Client | None, str | None]:
        """The client, or None and the one-sentence reason."""
        try:
            return await self.temporal(), None
        except TemporalUnreachableError as exc:
            return None, _sentence(str(exc))

    def open_ledger(self) -> Ledger:
        """The ledger, opened read-only on first use (never created).

        Raises:
            LedgerNotReadyError: the database cannot be opened.
        """
        if self.ledger is None:
            try:
                self.ledger = Ledger.open(
                    self.settings.db_url, create=False, origin=self.settings.log_origin
                )
            except LineageError as exc:
                raise LedgerNotReadyError(_sentence(f"The ledger cannot be opened: {exc}")) from exc
        return self.ledger

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


def _sentence(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "Unknown error"
    return first if first.endswith((".", "!", "?")) else first + "."


def _deps(request: Request) -> _Deps:
    deps: _Deps = request.app.state.deps
    return deps


def _ui_link(deps: _Deps, workflow_id: str, run_id: str) -> str | None:
    if not deps.temporal_ui:
        return None
    ns = quote(deps.settings.namespace, safe="")
    return (
        f"{deps.temporal_ui}/namespaces/{ns}/workflows/"
        f"{quote(workflow_id, safe='')}/{quote(run_id, safe='')}/history"
    )


def _ecp_queues(settings: Settings) -> frozenset[str]:
    """The task queues ECP's own workers poll: only runs there are governance state."""
    return frozenset({settings.executor_queue, settings.authority_queue})


async def _ledger_word(deps: _Deps, rows: tuple[ExecutionRow, ...]) -> tuple[ExecutionRow, ...]:
    """``rows`` labelled by what the ledger's signed evidence says of each (one query).

    A ledger or trust store that cannot be read vouches for nothing: every
    run on ECP's queues is then unverified, saying why.
    """
    claims = [claim_of(r) for r in rows if not r.off_queue]
    if not claims:
        return rows
    words = await _ledger_words(deps, claims)
    return tuple(
        with_ledger_word(r, words[(r.workflow_id, r.run_id)]) if not r.off_queue else r
        for r in rows
    )


async def _ledger_words(
    deps: _Deps, claims: list[Claim], *, max_entries: int = MAX_ENTRIES_PER_PAGE
) -> dict[tuple[str, str], Vouch]:
    """The ledger's word on each claim; every one unverified when it cannot be read."""
    try:
        ledger = deps.open_ledger()
        trust = await asyncio.to_thread(TrustStore.load, deps.settings.trust)
        return await asyncio.to_thread(
            vouch_for,
            ledger,
            trust,
            deps.settings.namespace,
            claims,
            at=datetime.now(UTC),
            max_entries=max_entries,
        )
    except (LedgerNotReadyError, LineageError, AuthorityError) as exc:
        why = Vouch("unverified", _sentence(f"Nothing vouches for it: {exc}"))
        return {(c.workflow_id, c.run_id): why for c in claims}


_CHART_TITLES: Final = {
    "governed-decisions": "Governed executions started, by decision",
    "governed-outcomes": "Governed executions started, by outcome",
    "approval-waits": "Approval waiting time",
    "denial-reasons": "Denials by reason code",
    "attempt-duration": "Gate latency (governed attempts)",
    "ledger-size": "Ledger size",
    "checkpoint-age": "Checkpoint age",
}


def _gate_key_ids(settings: Settings) -> frozenset[str]:
    """The worker (gate) key ids of the trust store; none when it cannot be read."""
    try:
        trust = TrustStore.load(settings.trust)
    except AuthorityError:
        return frozenset()
    return frozenset(k.key_id for k in trust.by_role(KeyRole.WORKER))


async def _compute_charts(deps: _Deps, names: tuple[str, ...], w: Window) -> dict[str, Chart | str]:
    """Each named chart, or the one sentence saying why it cannot be drawn now."""
    now = datetime.now(UTC)
    out: dict[str, Chart | str] = {}
    queues = _ecp_queues(deps.settings)
    if {"governed-decisions", "governed-outcomes", "approval-waits"} & set(names):
        client, reason = await deps.temporal_or_reason()
        if client is None:
            out.update(dict.fromkeys(GOVERNANCE_CHARTS, reason or "Temporal is unreachable."))
        else:

            async def judge(claims: list[Claim]) -> Mapping[tuple[str, str], Vouch]:
                return await _ledger_words(deps, claims, max_entries=LEDGER_CAP * 4)

            try:
                if {"governed-decisions", "governed-outcomes"} & set(names):
                    for c in await governed_activity(client, queues, w, now, judge):
                        out[c.name] = c
                if "approval-waits" in names:
                    out["approval-waits"] = await approval_waits(client, queues, w, now, judge)
            except RPCError as exc:
                out.update(dict.fromkeys(GOVERNANCE_CHARTS, _sentence(f"Temporal: {exc.message}")))
    if set(HEALTH_CHARTS) & set(names):
        try:
            ledger = deps.open_ledger()
            gate_keys = await asyncio.to_thread(_gate_key_ids, deps.settings)
            out.update(await asyncio.to_thread(ledger_charts, ledger, w, now, gate_keys))
        except LedgerNotReadyError as exc:
            out.update(dict.fromkeys(HEALTH_CHARTS, str(exc)))
        except LineageError as exc:
            out.update(dict.fromkeys(HEALTH_CHARTS, _sentence(f"The ledger cannot be read: {exc}")))
    return out


async def _chart_section(deps: _Deps, names: tuple[str, ...], w: Window) -> dict[str, object]:
    found = await _compute_charts(deps, names, w)
    items = []
    for name in names:
        got = found.get(name, "Not available.")
        chart = got if isinstance(got, Chart) else None
        items.append(
            {
                "name": name,
                "title": chart.title if chart else _CHART_TITLES[name],
                "chart": chart,
                "svg": chart_svg(chart, f"chart-{name}-title") if chart else None,
                "problem": None if chart else got,
            }
        )
    return {"window": w, "windows": list(WINDOWS.values()), "entries": items}


async def _chart_json(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in _CHART_TITLES:
        raise HTTPException(404)
    w = window_named(request.query_params.get("window", ""))
    got = (await _compute_charts(_deps(request), (name,), w))[name]
    if isinstance(got, str):
        return JSONResponse({"error": got}, status_code=503)
    return JSONResponse(got.to_dict())


async def _index(request: Request) -> Response:
    return RedirectResponse("/governance", status_code=303)


def _signin_of(request: Request) -> SignIn:
    signin = _deps(request).signin
    if signin is None:
        raise HTTPException(404)
    return signin


async def _login(request: Request) -> Response:
    signin = _signin_of(request)
    nxt = request.query_params.get("next", "/governance")
    url, login = await signin.start(request, nxt if nxt.startswith("/") else "/governance")
    response = RedirectResponse(url, status_code=303)
    response.headers.append("set-cookie", set_cookie(signin.config, LOGIN_COOKIE, login, 600))
    return response


async def _callback(request: Request) -> Response:
    signin = _signin_of(request)
    q = request.query_params
    if q.get("error"):
        raise SignInError(f"The identity provider refused the sign-in: {q['error'][:80]}.")
    cookies = cookies_of(request.scope.get("headers", []))
    session, nxt = await signin.finish(request, cookies)
    response = RedirectResponse(nxt, status_code=303)
    cfg = signin.config
    response.headers.append(
        "set-cookie", set_cookie(cfg, SESSION_COOKIE, session, cfg.session_seconds)
    )
    response.headers.append("set-cookie", set_cookie(cfg, LOGIN_COOKIE, "", 0))
    return response


async def _logout(request: Request) -> Response:
    signin = _signin_of(request)
    visitor = _visitor(request)
    body = (await request.body())[:4096].decode("utf-8", "replace")
    sent = parse_qs(body).get("csrf", [""])[0]
    # The session's own token, sent back by its own form: another site's
    # form cannot know it.
    if not visitor.signed_in or not sent or not hmac.compare_digest(sent, visitor.csrf):
        return _error_page(request, 403, "The sign-out form is not from this session.")
    response = RedirectResponse("/proofs" if signin.config.public else "/login", status_code=303)
    response.headers.append("set-cookie", set_cookie(signin.config, SESSION_COOKIE, "", 0))
    return response


async def _governance(request: Request) -> Response:
    deps = _deps(request)
    q = request.query_params
    redacted = not _visitor(request).may("viewer")
    flt = GovernanceFilter(
        decision=q.get("decision", "").strip(),
        action=q.get("action", "").strip(),
        # A redacted list shows no initiator, so it must not filter by one either.
        initiator="" if redacted else q.get("initiator", "").strip(),
        policy=q.get("policy", "").strip(),
        started_from=q.get("from", "").strip(),
        started_to=q.get("to", "").strip(),
    )
    flt.query()  # refuse a bad filter before connecting
    client = await deps.temporal()
    page = await list_executions(
        client, flt, queues=_ecp_queues(deps.settings), page_token=q.get("page", "")
    )
    page = dataclasses.replace(page, rows=await _ledger_word(deps, page.rows))
    filters = {
        "decision": flt.decision,
        "action": flt.action,
        "initiator": flt.initiator,
        "policy": flt.policy,
        "from": flt.started_from,
        "to": flt.started_to,
    }
    first_query = urlencode({k: v for k, v in filters.items() if v})
    next_query = None
    if page.next_token:
        next_query = urlencode({**{k: v for k, v in filters.items() if v}, "page": page.next_token})
    links = {r.workflow_id + r.run_id: _ui_link(deps, r.workflow_id, r.run_id) for r in page.rows}
    w = window_named(q.get("window", ""))
    charts = None if q.get("page") or redacted else await _chart_section(deps, GOVERNANCE_CHARTS, w)
    return render(
        "governance.html",
        title="Governance",
        nav="governance",
        page=page,
        filters=filters,
        first_query=first_query,
        next_query=next_query,
        ui_links=links,
        first_page=not q.get("page"),
        charts=charts,
        redacted=redacted,
    )


def _csrf(request: Request) -> str:
    visitor = _visitor(request)
    return visitor.csrf if visitor.signed_in else _deps(request).anon_csrf


async def _execution(request: Request) -> Response:
    deps = _deps(request)
    workflow_id = str(request.path_params["workflow_id"])
    client = await deps.temporal()
    detail = await describe_execution(client, workflow_id, queues=_ecp_queues(deps.settings))
    (row,) = await _ledger_word(deps, (detail.row,))
    detail = dataclasses.replace(detail, row=row)
    return render(
        "execution.html",
        title=f"Execution {visible(workflow_id)}",
        nav="governance",
        detail=detail,
        ui_link=_ui_link(deps, detail.row.workflow_id, detail.row.run_id),
        may_approve=_visitor(request).may("approver"),
        csrf=_csrf(request),
        workflow_quoted=quote(workflow_id, safe=""),
        approved=request.query_params.get("approved", "") == "1",
    )


#: What a passkey approval form posts besides its payload (base64url each).
_ASSERTION_FIELDS = (
    "credential_id",
    "authenticator_data",
    "client_data_json",
    "signature",
    "user_handle",
)


async def _approve(request: Request) -> Response:
    deps = _deps(request)
    workflow_id = str(request.path_params["workflow_id"])
    body = (await request.body())[: 64 * 1024].decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(body).items()}
    sent = form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent, _csrf(request)):
        return _error_page(request, 403, "The approval form is not from this console session.")
    client = await deps.temporal()
    if form.get("kind") == "passkey":
        await relay_passkey_approval(
            client,
            workflow_id,
            payload_b64=form.get("payload", ""),
            assertion={k: form.get(k, "") for k in _ASSERTION_FIELDS},
            queues=_ecp_queues(deps.settings),
        )
    else:
        await relay_approval(
            client,
            workflow_id,
            payload_b64=form.get("payload", ""),
            signature_b64=form.get("signature", ""),
            queues=_ecp_queues(deps.settings),
        )
    return RedirectResponse(
        f"/governance/{quote(workflow_id, safe='')}?approved=1", status_code=303
    )


def _children(request: Request) -> bool:
    return request.query_params.get("children", "") in ("1", "true", "yes", "on")


async def _graph_for(
    request: Request,
) -> tuple[nx.DiGraph, CrossCheckReport | None, str | None, str, bool]:
    deps = _deps(request)
    workflow_id = str(request.path_params["workflow_id"])
    follow = _children(request)
    client = await deps.temporal()
    ledger: Ledger | None = None
    ledger_error: str | None = None
    try:
        ledger = deps.open_ledger()
    except LedgerNotReadyError as exc:
        ledger_error = str(exc)
    g, report, check_error = await load_lineage_graph(
        client,
        deps.settings,
        ledger,
        ledger_error,
        workflow_id,
        follow_children=follow,
        max_events=deps.lineage.limits.max_events,
    )
    return g, report, check_error, workflow_id, follow


def _exports(workflow_id: str, follow: bool) -> list[tuple[str, str, str]]:
    suffix = "?children=1" if follow else ""
    return [
        (
            f.value,
            f"/lineage/{quote(workflow_id, safe='')}/export/{f.value}{suffix}",
            _download_name(workflow_id, ext),
        )
        for f, (ext, _) in EXPORTS.items()
    ]


async def _lineage(request: Request) -> Response:
    gate = _deps(request).lineage
    # Bounded work: a render slot (or a 503), the event and node caps, and
    # nothing left running once the client has gone.
    async with gate.slot():
        return await until_disconnect(request, gate, _lineage_page(request, gate.limits))


async def _lineage_page(request: Request, limits: LineageLimits) -> Response:
    workflow_id = str(request.path_params["workflow_id"])
    follow = _children(request)
    title = f"Lineage of {visible(workflow_id)}"
    try:
        g, report, check_error, workflow_id, follow = await _graph_for(request)
        view = await lineage_view(g, report, check_error, workflow_id, follow, limits)
    except LineageTooLargeError as exc:
        return render(
            "lineage_too_large.html",
            title=title,
            nav="governance",
            reason=str(exc),
            over_events=exc.events > 0,
            workflow_id=workflow_id,
            exports=_exports(workflow_id, follow),
            workflow_quoted=quote(workflow_id, safe=""),
            command=f"ecp lineage export {shell_quote(workflow_id)} --format svg --out FILE",
        )
    violations = [f for f in view.findings if f.status == "violation"]
    return render(
        "lineage.html",
        title=title,
        nav="governance",
        view=view,
        exports=_exports(workflow_id, follow),
        violations=violations,
        workflow_quoted=quote(workflow_id, safe=""),
    )


def _download_name(workflow_id: str, ext: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)[:120]
    return f"{safe}.{ext}"


async def _lineage_export(request: Request) -> Response:
    gate = _deps(request).lineage
    async with gate.slot():
        return await until_disconnect(request, gate, _lineage_download(request, gate.limits))


async def _lineage_download(request: Request, limits: LineageLimits) -> Response:
    fmt = str(request.path_params["fmt"])
    g, _, _, workflow_id, _ = await _graph_for(request)
    if fmt == ExportFormat.SVG.value:
        ext, media = EXPORTS[ExportFormat.SVG]
        text = await export_svg(g, limits)
    else:
        text, media, ext = await asyncio.to_thread(
            export_lineage, g, fmt, _deps(request).settings.namespace
        )
    return Response(
        text,
        media_type=media,
        headers={
            "content-disposition": f'attachment; filename="{_download_name(workflow_id, ext)}"'
        },
    )


async def _consistency_doc(request: Request) -> dict[str, object]:
    q = request.query_params
    old = parse_size(q.get("old", ""), "old")
    new = parse_size(q["new"], "new") if q.get("new", "").strip() else None
    ledger = _deps(request).open_ledger()
    return await asyncio.to_thread(consistency_document, ledger, old, new)


async def _consistency_json(request: Request) -> Response:
    return JSONResponse(await _consistency_doc(request))


async def _proofs(request: Request) -> Response:
    deps = _deps(request)
    raw_index = request.query_params.get("index", "").strip()
    consistency_json = ""
    if request.query_params.get("old", "").strip():
        consistency_json = json.dumps(await _consistency_doc(request), indent=2)
    receipt_json = ""
    if raw_index:
        if not raw_index.isascii() or not raw_index.isdigit() or len(raw_index) > 18:
            raise LedgerNotReadyError("A ledger index is a non-negative whole number.")
        index = int(raw_index)
        ledger = deps.open_ledger()
        try:
            receipt = await asyncio.to_thread(ledger.receipt, index)
        except EntryNotFoundError as exc:
            raise LedgerNotReadyError(f"The ledger has no entry at index {index}.") from exc
        except NoCheckpointError as exc:
            raise LedgerNotReadyError(
                f"No signed checkpoint covers entry {index} yet; try again after the next one."
            ) from exc
        except LineageError as exc:
            raise LedgerNotReadyError(_sentence(f"The ledger cannot be read: {exc}")) from exc
        receipt_json = receipt.to_json().decode()
    return render(
        "proofs.html",
        title="Proof viewer",
        nav="proofs",
        receipt_json=receipt_json,
        index=raw_index,
        expected_origin=deps.settings.log_origin,
        consistency_json=consistency_json,
        old=request.query_params.get("old", ""),
        new=request.query_params.get("new", ""),
    )


async def _register_passkey(request: Request) -> Response:
    # The ceremony runs in the browser and ends with a command for an
    # operator: the console stores nothing and cannot make an approver.
    visitor = _visitor(request)
    return render(
        "passkey_register.html",
        title="Register a passkey",
        nav="",
        rp_id=request.url.hostname or "",
        origin=f"{request.url.scheme}://{request.url.netloc}",
        approver=visitor.name if visitor.signed_in else "",
    )


async def _health_report(deps: _Deps) -> dict[str, object]:
    client, temporal_error = await deps.temporal_or_reason()
    ledger_error: str | None = None
    ledger: Ledger | None = None
    try:
        ledger = deps.open_ledger()
    except LedgerNotReadyError as exc:
        ledger_error = str(exc)
    report = await collect_health(
        deps.settings, client, temporal_error, ledger, ledger_error, auditor=deps.auditor
    )
    return report.to_dict()


async def _health_json(request: Request) -> Response:
    doc = await _health_report(_deps(request))
    # 503 on red lets a plain HTTP monitor alert without parsing the body.
    return JSONResponse(doc, status_code=503 if doc["status"] == "red" else 200)


async def _health(request: Request) -> Response:
    deps = _deps(request)
    w = window_named(request.query_params.get("window", ""))
    doc = await _health_report(deps)
    charts = await _chart_section(deps, HEALTH_CHARTS, w)
    return render(
        "health.html",
        title="Health",
        nav="health",
        report=doc,
        refresh=HEALTH_REFRESH_SECONDS,
        charts=charts,
    )


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_page(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render("error.html", status_code=status, title="Problem", nav="", message=message)


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    response = _error_page(request, exc.status, str(exc))
    if exc.status == 503:
        response.headers["retry-after"] = "5"
    return response


async def _unreachable(request: Request, exc: Exception) -> Response:
    deps = _deps(request)
    return _error_page(
        request,
        503,
        f"Temporal at {deps.settings.temporal_address} cannot be reached; "
        "the health and proof pages still work.",
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (
        "There is no page at this address."
        if exc.status_code == 404
        else (f"The request was refused ({exc.status_code}).")
    )
    return _error_page(request, exc.status_code, message)


async def _crash(request: Request, exc: Exception) -> Response:
    # Reached only through Starlette's last-resort handler; the trace goes to
    # the server log, never to the page.
    return _error_page(
        request, 500, "The console hit an unexpected error on this page; other pages still work."
    )


class _AnyText(Convertor[str]):
    """A path segment run that may hold any character, a newline included.

    Starlette's ``path`` convertor is ``.*``, which stops at a newline: a
    workflow id holding one linked to a page that was always a 404.
    """

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


class _Console(Starlette):
    """Starlette with the security headers outside its last-resort error middleware.

    Starlette keeps ``ServerErrorMiddleware`` outermost, so a header
    middleware added the usual way never sees its 500 page.
    """

    def build_middleware_stack(self) -> ASGIApp:
        deps: _Deps = self.state.deps
        return _SecurityHeaders(_Gatekeeper(super().build_middleware_stack(), deps.signin))


def create_app(
    settings: Settings,
    *,
    temporal_ui: str | None = None,
    verify_every: timedelta = VERIFY_EVERY,
    lineage_limits: LineageLimits = DEFAULT_LIMITS,
    signin: SignInConfig | None = None,
    base_url: str | None = None,
) -> Starlette:
    """Build the console for ``settings``.

    Args:
        settings: the deployment's settings (Temporal, queues, ledger, trust store,
            policy, and the console's sign-in, ``ECP_CONSOLE_*``).
        temporal_ui: base URL of the Temporal Web UI for "open in Temporal" links, if any.
        verify_every: the health page's full ledger verification runs at most this often.
        lineage_limits: what one Lineage Explorer request may cost.
        signin: OpenID Connect sign-in; None takes it from ``settings``, and when
            they configure none, every page is served to every visitor.
        base_url: the console's URL when ``ECP_CONSOLE_PUBLIC_URL`` is unset.

    Raises:
        SignInConfigError: the settings configure sign-in by half.
    """
    if signin is None:
        signin = signin_from_settings(settings, default_base_url=base_url)
    deps = _Deps(
        settings,
        temporal_ui.rstrip("/") if temporal_ui else None,
        auditor=LedgerAuditor(verify_every),
        lineage=LineageGate(lineage_limits),
        signin=SignIn(signin) if signin is not None else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            deps.close()

    handlers: dict[object, Callable[[Request, Exception], Awaitable[Response]]] = {
        ConsoleError: _console_error,
        TemporalUnreachableError: _unreachable,
        HTTPException: _http_error,
        Exception: _crash,
    }
    app = _Console(
        debug=False,
        routes=[
            Route("/", _index),
            Route("/login", _login),
            Route("/auth/callback", _callback),
            Route("/logout", _logout, methods=["POST"]),
            Route("/governance", _governance),
            Route("/governance/{workflow_id:anytext}/approve", _approve, methods=["POST"]),
            Route("/governance/{workflow_id:anytext}", _execution),
            Route("/lineage/{workflow_id:anytext}/export/{fmt}", _lineage_export),
            Route("/lineage/{workflow_id:anytext}", _lineage),
            Route("/proofs", _proofs),
            Route("/passkeys/register", _register_passkey),
            Route("/health", _health),
            Route("/api/health", _health_json),
            Route("/api/consistency", _consistency_json),
            Route("/api/charts/{name}", _chart_json),
            Mount("/static", StaticFiles(directory=_STATIC), name="static"),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.deps = deps
    return app
