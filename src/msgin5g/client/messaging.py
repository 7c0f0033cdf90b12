"""Messaging procedures of the MSGin5G Client (digest §3.7.4, §3.10, §3.13, §3.16).

:class:`Messaging` builds the uplink requests of a UE — point-to-point, group,
broadcast-area, Application Server and topic messages, aggregates, topic
(un)subscriptions and updates of stored messages — and hands them to the
client's request API (:meth:`~msgin5g.client.Client.submit` for messages, which
segments and re-registers; :meth:`~msgin5g.client.Client.request` otherwise).
"""

import abc
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypedDict, TypeVar, Unpack

import msgspec

from msgin5g.model.aggregation import bundle
from msgin5g.model.messages import (
    Msg,
    MsgResp,
    MsgUpd,
    StoreAndForwardParams,
    TopicSub,
    TopicSubResp,
    TopicUnsub,
    TopicUnsubResp,
)
from msgin5g.spec.delivery import PriorityType

__all__ = ["Messaging", "SendOptions"]


class SendOptions(TypedDict, total=False):
    """Keyword options of ``send_to_group`` / ``send_to_area`` / ``send_to_as``."""

    application_id: str | None
    """Application ID the recipient hands the payload to."""
    report: bool
    """Ask for delivery status reports (default False)."""
    store_and_forward: bool
    """Let the server store it for unreachable recipients (default True)."""
    message_id: str | None
    """MSGin5G Message ID (default: a new UUID)."""
    priority: PriorityType | str | None
    """``HIGH``, ``MIDDLE`` or ``LOW``."""
    expires: datetime | None
    """Message expiration time of a stored copy."""


R = TypeVar("R", bound=msgspec.Struct)


class Messaging(abc.ABC):
    """Uplink messaging procedures; :class:`~msgin5g.client.Client` builds on it."""

    ue_service_id: str

    @abc.abstractmethod
    async def submit(
        self, msg: Msg, progress: Callable[[int, int], None] | None = None
    ) -> MsgResp:
        """Send a ``MSG`` (segmented when long); see the client."""

    @abc.abstractmethod
    async def _submit(self, item: msgspec.Struct) -> MsgResp:
        """Send one request answered by ``MSGRESP``, re-registering if need be."""

    @abc.abstractmethod
    async def _call(self, item: msgspec.Struct, expect: type[R]) -> R:
        """One request/response exchange."""

    async def send(
        self,
        to: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        report: bool = False,
        priority: PriorityType | str | None = None,
        store_and_forward: bool = True,
        expires: datetime | None = None,
        message_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> MsgResp:
        """Send a point-to-point message to another UE (``MSG``, digest §3.7.4).

        ``store_and_forward`` defaults to True in this library (the wire default
        is False): a device usually wants its message kept for a sleeping peer.
        A payload above ``segment_size`` is sent as segments (digest §3.12), one
        outstanding at a time; ``progress(sent, total)`` is called after each.

        Returns:
            The server's ``MSGRESP`` (for a segmented message: the answer to the
            last segment, which carries the outcome of the whole message);
            ``DELY_ACCEPTED``/``DELY_STORED`` are not proof of delivery — only an
            ``IMDN`` is.
        """
        msg = Msg(
            message_id=message_id or str(uuid.uuid4()),
            originating_ue_service_id=self.ue_service_id,
            recipient_ue_service_id=to,
            delivery_status_required=report,
            application_id=application_id,
            payload=payload.encode() if isinstance(payload, str) else payload,
            priority_type=PriorityType(priority) if priority else None,
            store_and_forward_flag=store_and_forward,
            store_and_forward_params=(
                StoreAndForwardParams(message_expiration_time=expires)
                if expires
                else None
            ),
        )
        return await self.submit(msg, progress)

    async def send_aggregated(
        self,
        to: str,
        payloads: list[bytes | str],
        *,
        application_id: str | None = None,
        report: bool = False,
        store_and_forward: bool = True,
    ) -> MsgResp:
        """Send several small messages to one UE in one ``AGGMSG`` (digest §3.10).

        Returns:
            The server's ``MSGRESP`` for the aggregate; ``itemResponses`` lists
            items whose outcome differs from the aggregate's.
        """
        messages = [
            Msg(
                message_id=str(uuid.uuid4()),
                originating_ue_service_id=self.ue_service_id,
                recipient_ue_service_id=to,
                delivery_status_required=report,
                application_id=application_id,
                payload=p.encode() if isinstance(p, str) else p,
                store_and_forward_flag=store_and_forward,
            )
            for p in payloads
        ]
        return await self._submit(bundle(messages))

    async def subscribe(
        self, topics: str | list[str], *, expiration: datetime | None = None
    ) -> TopicSubResp:
        """Subscribe to Messaging Topics (``TOPICSUB``, digest §3.13.3).

        ``topics`` is one topic or a list. Publications then arrive as ordinary
        received ``MSG`` items carrying ``messagingTopic``. The response has one
        result per topic and the expiration the server granted.
        """
        request = TopicSub(
            originating_ue_service_id=self.ue_service_id,
            messaging_topics=[topics] if isinstance(topics, str) else list(topics),
            expiration=expiration,
        )
        return await self._call(request, TopicSubResp)

    async def unsubscribe(
        self, topics: str | list[str] | None = None
    ) -> TopicUnsubResp:
        """Stop topic subscriptions (``TOPICUNSUB``; None = all of them)."""
        if isinstance(topics, str):
            topics = [topics]
        request = TopicUnsub(
            originating_ue_service_id=self.ue_service_id,
            messaging_topics=topics or [],
        )
        return await self._call(request, TopicUnsubResp)

    async def send_to_group(
        self, group: str, payload: bytes | str, **options: Unpack[SendOptions]
    ) -> MsgResp:
        """Send to every member of a group (TS 23.554 §8.7.4; reports per member).

        ``options`` as for every ``send_to_*``: :class:`SendOptions`.
        """
        return await self._send_one(payload, options, recipient_group_service_id=group)

    async def send_to_area(
        self, area: str, payload: bytes | str, **options: Unpack[SendOptions]
    ) -> MsgResp:
        """Broadcast to every UE in a Broadcast Area (digest §2.14).

        The area's policy decides whether UEs may broadcast (docs/broadcast.md);
        otherwise the answer is ``DELY_REJECTED`` / ``NOT_AUTHORIZED``.
        """
        return await self._send_one(payload, options, recipient_broadcast_area_id=area)

    async def send_to_as(
        self, as_service_id: str, payload: bytes | str, **options: Unpack[SendOptions]
    ) -> MsgResp:
        """Point-to-Application: send to an Application Server (digest §2.12)."""
        return await self._send_one(
            payload, options, recipient_as_service_id=as_service_id
        )

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        store_and_forward: bool = True,
        message_id: str | None = None,
    ) -> MsgResp:
        """Publish to a Messaging Topic: every subscriber gets a copy (§3.13.2)."""
        options: SendOptions = {
            "application_id": application_id,
            "store_and_forward": store_and_forward,
            "message_id": message_id,
        }
        return await self._send_one(payload, options, messaging_topic=topic)

    async def _send_one(
        self, payload: bytes | str, options: SendOptions, **recipient: str
    ) -> MsgResp:
        """One unsegmented ``MSG`` to the recipient member given as keyword."""
        priority = options.get("priority")
        expires = options.get("expires")
        msg = Msg(
            message_id=options.get("message_id") or str(uuid.uuid4()),
            originating_ue_service_id=self.ue_service_id,
            delivery_status_required=options.get("report", False),
            application_id=options.get("application_id"),
            payload=payload.encode() if isinstance(payload, str) else payload,
            priority_type=PriorityType(priority) if priority else None,
            store_and_forward_flag=options.get("store_and_forward", True),
            store_and_forward_params=(
                StoreAndForwardParams(message_expiration_time=expires)
                if expires
                else None
            ),
        )
        return await self._submit(msgspec.structs.replace(msg, **recipient))

    async def update_stored(
        self, to: str, message_id: str, *, expires: datetime | None
    ) -> MsgResp:
        """Change the expiry of a stored message, or discard it (``expires=None``)."""
        upd = MsgUpd(
            originating_ue_service_id=self.ue_service_id,
            recipient_ue_service_id=to,
            message_id=message_id,
            store_and_forward_params=(
                StoreAndForwardParams(message_expiration_time=expires)
                if expires
                else None
            ),
        )
        return await self._submit(upd)
