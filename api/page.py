"""The agent page: ``GET /agent/{agent_id}`` — plain HTML and one small script, no build.

Signing in: a small form posts the token (``POST /agent/login``), or a link carries it
once (``?token=``, exchanged at once for the cookie and dropped from the address). The
cookie is HttpOnly and SameSite=Strict; the page's script then calls the ``/v1`` API
with it (a browser's EventSource cannot send an Authorization header). An agent's token
opens only its own page; a supervisor's opens any. ``?customer=<id>`` shows a given
customer instead of the current one (the API still checks the agent is connected).
"""

from __future__ import annotations

import html
from importlib.resources import files
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

if TYPE_CHECKING:
    from api.http import Api

LOGIN_COOKIE = "portrait_token"
STATIC = files("api") / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _page(name: str, **values: str) -> str:
    text = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _with_cookie(answer: web.StreamResponse, token: str, secure: bool) -> web.StreamResponse:
    answer.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=secure
    )
    return answer


def add_page_routes(app: web.Application, api: Api) -> None:
    """The page, its login and its static files."""
    secure = api.settings.profile == "production"

    async def page(request: web.Request) -> web.StreamResponse:
        agent_id = request.match_info["agent_id"]
        token = request.query.get("token")
        if token:  # a link's token becomes the cookie; the address loses it
            if api.tokens.authenticate(token) is None:
                return _html(_page("login.html", agent=agent_id, note="unknown token"), 401)
            rest = "&".join(f"{k}={quote(v)}" for k, v in request.query.items() if k != "token")
            target = request.path + (f"?{rest}" if rest else "")
            return _with_cookie(web.HTTPSeeOther(target), token, secure)
        principal = api.tokens.authenticate(request.cookies.get(LOGIN_COOKIE))
        if principal is None:
            return _html(_page("login.html", agent=agent_id, note=""), 401)
        if not principal.may_read_prompts(agent_id):
            return _html(_page("forbidden.html", agent=agent_id), 403)
        customer = request.query.get("customer", "")
        return _html(_page("agent.html", agent=agent_id, customer=customer))

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token, agent_id = str(form.get("token", "")), str(form.get("agent", ""))
        if api.tokens.authenticate(token) is None:
            return _html(_page("login.html", agent=agent_id, note="unknown token"), 401)
        return _with_cookie(web.HTTPSeeOther(f"/agent/{quote(agent_id)}"), token, secure)

    async def static(request: web.Request) -> web.StreamResponse:
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

    app.router.add_get("/agent/static/{name}", static)
    app.router.add_post("/agent/login", login)
    app.router.add_get("/agent/{agent_id}", page)
