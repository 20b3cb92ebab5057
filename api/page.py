"""The agent page: ``GET /agent/{agent_id}`` — plain HTML and one small script, no build.

Signing in: a small form posts the token (``POST /agent/login``, protected against
cross-site requests), or a link carries it once (``?token=``, dropped from the address at
once). Either opens a session (``api/sessions.py``): the cookie holds a random session
id, HttpOnly and SameSite=Strict, never the token; the page's script then calls the
``/v1`` API with it (a browser's EventSource cannot send an Authorization header). An agent's token
opens only its own page; a supervisor's opens any. ``?customer=<id>`` shows a given
customer instead of the current one (the API still checks the agent is connected).
"""

from __future__ import annotations

import html
from importlib.resources import files
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from api.access import is_agent_id, token_digest
from api.sessions import new_form_token, same_site_form, set_session

if TYPE_CHECKING:
    from api.http import Api

STATIC = files("api") / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _page(name: str, **values: str) -> str:
    text = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.StreamResponse:
    """The page's script and style (the only answers a cache may keep)."""
    name = request.match_info["name"]
    kind = next((t for suffix, t in _TYPES.items() if name.endswith(suffix)), None)
    resource = STATIC / name
    if kind is None or "/" in name or not resource.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=resource.read_bytes(),
        content_type=kind,
        charset="utf-8",
        headers={"Cache-Control": "max-age=300"},
    )


def add_page_routes(app: web.Application, api: Api) -> None:
    """The page, its login and its static files."""
    secure = api.settings.profile == "production"

    def login_form(agent_id: str, note: str, status: int) -> web.Response:
        answer = _html("", status)
        csrf = new_form_token(answer, secure)
        answer.text = _page("login.html", agent=agent_id, note=note, csrf=csrf)
        return answer

    async def signed_in(request: web.Request, token: str, target: str) -> web.StreamResponse:
        """A session for a presented token, and the way on; the form again when the
        token is unknown (counted towards the address's failures)."""
        agent_id = request.match_info.get("agent_id", "")
        principal = api.tokens.authenticate(token)
        if principal is None:
            api.limits.failed(request.remote or "")
            return login_form(agent_id, "unknown token", 401)
        session_id = await api.sessions.open(token_digest(token))
        answer = web.HTTPSeeOther(target)
        set_session(answer, session_id, api.sessions.seconds, secure)
        return answer

    async def page(request: web.Request) -> web.StreamResponse:
        agent_id = request.match_info["agent_id"]
        if not is_agent_id(agent_id):
            return _html(_page("forbidden.html", agent=""), 400)
        token = request.query.get("token")
        if token:  # a link's token opens a session; the address loses it
            rest = "&".join(f"{k}={quote(v)}" for k, v in request.query.items() if k != "token")
            return await signed_in(request, token, request.path + (f"?{rest}" if rest else ""))
        principal = await api.principal(request)
        if principal is None:
            return login_form(agent_id, "", 401)
        if not principal.may_read_prompts(agent_id):
            return _html(_page("forbidden.html", agent=agent_id), 403)
        customer = request.query.get("customer", "")
        return _html(_page("agent.html", agent=agent_id, customer=customer))

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token, agent_id = str(form.get("token", "")), str(form.get("agent", ""))
        if not same_site_form(request, str(form.get("csrf", ""))):
            return _html(_page("forbidden.html", agent=""), 403)
        if not is_agent_id(agent_id):
            return _html(_page("forbidden.html", agent=""), 400)
        return await signed_in(request, token, f"/agent/{quote(agent_id)}")

    app.router.add_get("/agent/static/{name}", static)
    app.router.add_post("/agent/login", login)
    app.router.add_get("/agent/{agent_id}", page)
