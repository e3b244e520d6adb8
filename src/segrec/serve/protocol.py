"""Uvicorn's HTTP protocol with a deadline for request headers (``segrec serve`` runs it)."""

from __future__ import annotations

__all__ = ["HEADER_TIMEOUT_S", "deadline_protocol"]

#: seconds a client may take to send a request's headers (slow clients hold connections)
HEADER_TIMEOUT_S = 10.0

_TIMEOUT_BODY = b'{"error":"timeout","message":"request headers took too long"}'
_HEADER_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                            b"content-length: " + str(len(_TIMEOUT_BODY)).encode() +
                            b"\r\nconnection: close\r\n\r\n" + _TIMEOUT_BODY)


def deadline_protocol(header_timeout: float = HEADER_TIMEOUT_S) -> type:
    """Uvicorn's HTTP protocol with a deadline for request headers (against slow clients).

    uvicorn times out idle keep-alive connections but not a request whose headers
    trickle in (every byte received re-arms nothing, so one byte every few seconds holds
    a connection open forever). This subclass arms a timer when a connection opens and
    after every response, disarms it once a request's headers are complete, and closes
    the connection with ``408`` when it fires.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _deadline = None

        _started = False

        def _arm(self) -> None:
            self._disarm()
            self._started = False
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if busy or self.transport.is_closing():
                return
            if self._started:  # part of a request arrived: say why the connection ends
                self.transport.write(_HEADER_TIMEOUT_RESPONSE)
            self.transport.close()  # an idle connection just closes, as keep-alive timeouts do

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            if self._deadline is not None:
                self._started = True
            super().data_received(data)
            if self.cycle is not before and self.cycle is not None:
                self._disarm()  # a request's headers are complete: the app (and body timeout) take over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol
