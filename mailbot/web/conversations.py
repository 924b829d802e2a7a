"""Conversations over HTTP: what an app not written in Python needs to use mailbot.

GET  /api/conversations                          the list, newest first
GET  /api/conversations/{key}                    the conversation, participants, comments
POST /api/conversations                          create one (or find it)
POST /api/conversations/{key}/participants       add a participant
POST /api/conversations/{key}/reply-address      mint a reply address for a participant
POST /api/conversations/{key}/notify             queue a notification to a participant
POST /api/tokens/revoke                          revoke a reply address
POST /api/tokens/{id}/revoke                     revoke one by its id (the page's button)

Writes take JSON (a form post from another site cannot send it without a CORS preflight,
which is never granted) and the Guard checks their Origin. The one answer that holds a live
reply address is the one that minted it, for the app that asked; it is never stored in a
log and is ``no-store`` for caches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from mailbot import headers
from mailbot.addresses import split, token_from_local_part
from mailbot.config import Settings
from mailbot.outbound import outbox
from mailbot.store import conversations, tokens
from mailbot.store.db import Sessions
from mailbot.store.models import utcnow
from mailbot.web import shapes, views
from mailbot.web.answers import ID_PATTERN, MAX_LIMIT, Redacted, error, limit, number

MAX_KEY = conversations.KEY_MAX
T = TypeVar("T")
NO_STORE = {"cache-control": "no-store"}


class NewConversation(BaseModel):
    key: str = Field(min_length=1, max_length=MAX_KEY, description="the app's id for it")
    subject: str = Field("", max_length=998)
    bot: str = Field("comments", max_length=100, description="the bot that handles replies")


Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


class Person(BaseModel):
    email: str = Field(max_length=320, description="exactly one address, no display name")
    name: str = Field("", max_length=200, description="the display name in mail")


class NewParticipant(Person):
    roles: list[Role] | None = Field(
        None, max_length=20, description="replace the participant's roles (bot commands' who=)"
    )


class Notification(Person):
    subject: str = Field(max_length=998)
    body: str = Field(max_length=1_000_000, description="plain text")


class ReplyAddress(BaseModel):
    reply_to: str = Field(description="reply+<token>@<domain>: put it in Reply-To")
    expires_at: str
    participant_id: int


class Revoke(BaseModel):
    address: str = Field(max_length=998, description="the reply address to revoke")


class Revoked(BaseModel):
    revoked: bool


def _key_ok(key: str) -> bool:
    return len(key) <= MAX_KEY and "\x00" not in key  # PostgreSQL text never holds NUL


def router(settings: Settings, sessions: Sessions, bots: frozenset[str] | None = None) -> APIRouter:
    """``bots``: the names the node's app has (None: not checked)."""
    api = APIRouter(prefix="/api", tags=["conversations"])
    ttl = timedelta(days=settings.token_ttl_days)

    @api.get(
        "/conversations",
        response_model=list[shapes.ConversationListed],
        response_model_exclude_unset=True,
    )
    async def listed(
        limit_: Annotated[str, Query(alias="limit", max_length=10)] = "100",
        before: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    ) -> Any:
        """Conversations, newest first; page on with ``before`` (an id)."""
        count = limit(limit_)
        if count is None:
            return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        async with sessions() as session:
            return await views.conversation_list(
                session, limit=count, before_id=int(before) if before else None
            )

    @api.get(
        "/conversations/{key:path}",
        response_model=shapes.Conversation,
        response_model_exclude_unset=True,
        responses={404: {}},
    )
    async def conversation(key: str) -> Any:
        """A conversation with its participants and comments."""
        data = None
        if _key_ok(key):
            async with sessions() as session:
                data = await views.conversation(session, key)
        return data if data is not None else error(404, "no such conversation")

    async def written(work: Callable[[AsyncSession], Awaitable[T]]) -> T | Response:
        """``work`` in one transaction. A request that raced another making the same
        conversation or participant (a unique key) is run once more, and finds it; a bad key
        or address is a 400."""
        for last in (False, True):
            try:
                async with sessions() as session, session.begin():
                    return await work(session)
            except (conversations.InvalidKey, headers.InvalidAddress) as bad:
                return error(400, str(bad))
            except IntegrityError:
                if last:
                    raise
        raise AssertionError("not reached")

    async def person_in(session: AsyncSession, key: str, who: Person) -> tuple[Any, Any]:
        found = await conversations.ensure(session, key, settings.domain)
        return found, await conversations.ensure_participant(session, found, who.email, who.name)

    @api.post(
        "/conversations",
        status_code=201,
        response_model=shapes.Conversation,
        response_model_exclude_unset=True,
        responses={400: {}},
    )
    async def create(new: NewConversation) -> Any:
        """Create a conversation, or find the one with this key."""
        if bots is not None and new.bot not in bots:
            # Refused now, not when its first reply fails: say which ones there are.
            return error(400, f"bot: no bot named {new.bot!r}; known: {sorted(bots)}")

        async def work(session: AsyncSession) -> None:
            await conversations.ensure(
                session, new.key, settings.domain, subject=new.subject, bot=new.bot
            )

        failed = await written(work)
        if isinstance(failed, Response):
            return failed
        async with sessions() as session:
            return Redacted(await views.conversation(session, new.key), status_code=201)

    @api.post(
        "/conversations/{key:path}/participants",
        status_code=201,
        response_model=shapes.Added,
        response_model_exclude_unset=True,
        responses={400: {}},
    )
    async def add_participant(key: str, person: NewParticipant) -> Any:
        """Add a participant (the conversation is made if new), or set their roles."""

        async def work(session: AsyncSession) -> Response:
            found = await conversations.ensure(session, key, settings.domain)
            added = await conversations.ensure_participant(
                session, found, person.email, person.name, person.roles
            )
            data = {"id": added.id, "email": added.email, "name": added.name}
            data["roles"] = added.roles or []
            return Redacted(data, status_code=201)

        return await written(work)

    @api.post(
        "/conversations/{key:path}/reply-address",
        response_model=ReplyAddress,
        status_code=201,
        responses={400: {}},
    )
    async def reply_address(key: str, person: Person) -> Any:
        """A new reply address for this participant (both made if new). The only answer that
        shows a live address: keep it, it is not shown again."""

        async def work(session: AsyncSession) -> Response:
            _, who = await person_in(session, key, person)
            token = await tokens.issue(session, who, ttl)
            minted = ReplyAddress(
                reply_to=tokens.reply_address(token, settings.domain),
                expires_at=(utcnow() + ttl).isoformat(),
                participant_id=who.id,
            )
            # Not Redacted: this address is what the caller asked for.
            return JSONResponse(minted.model_dump(), status_code=201, headers=NO_STORE)

        return await written(work)

    @api.post(
        "/conversations/{key:path}/notify",
        status_code=201,
        response_model=shapes.Outbound,
        response_model_exclude_unset=True,
        responses={400: {}},
    )
    async def notify(key: str, note: Notification) -> Any:
        """Queue a notification to one participant, with their own reply address."""

        async def work(session: AsyncSession) -> Response:
            found, who = await person_in(session, key, note)
            row = await outbox.queue(
                session,
                settings,
                conversation=found,
                to=who,
                subject=note.subject,
                body=f"{note.body}\n\n-- \nReply to this email to comment.\n",
            )
            await session.flush()  # its id and times, for the answer
            return Redacted(views.outbound_json(row), status_code=201)

        return await written(work)

    @api.post("/tokens/revoke", response_model=Revoked, tags=["tokens"])
    async def revoke(body: Revoke) -> Any:
        """Revoke a reply address: mail to it is refused from now on."""
        token = token_from_local_part(split(body.address)[0])
        if token is None:
            return error(400, "not a reply address")
        async with sessions() as session, session.begin():
            done = await tokens.revoke(session, token)
        return {"revoked": done}

    @api.post("/tokens/{id}/revoke", response_model=Revoked, tags=["tokens"], responses={404: {}})
    async def revoke_one(id: str) -> Any:  # noqa: A002 - the path's own name
        """Revoke one reply token by its id, as the conversation page lists them."""
        token_id = number(id)
        if token_id is None:
            return error(404, "no such token")
        async with sessions() as session, session.begin():
            found = await tokens.revoke_id(session, token_id)
        if found is None:
            return error(404, "no such token")
        return {"revoked": found}

    return api
