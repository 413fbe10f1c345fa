#!/usr/bin/env python3
"""A reference device client for Tern's HTTP bridge, in plain Python (standard library only).

It signs every request as docs/http.md describes (canonical string, HMAC-SHA256, counter or
random nonces), checks the signature of every answer against the request it sent, and keeps
only the acknowledgement it owes its mailbox: a device that wakes, talks and sleeps needs no
more.

    from http_device import Device
    device = Device("http://127.0.0.1:8080", "d:sensor-1", "<64 hex digits>")
    device.publish("sensors/sensor-1/t", b"21.5", qos=1)   # -> {"qos": 1, "matched": 2}
    device.publish_batch([{"topic": "sensors/sensor-1/t", "payload": 21.5}])
    device.subscribe("commands/sensor-1/#")                  # the mailbox: its MQTT session
    for message in device.receive(wait=25):                  # acknowledges the last ones
        print(message["seq"], message["topic"], message.get("payload"))
    answer = device.sync(publish=[{"topic": "sensors/sensor-1/t", "payload": 21.5}],
                         kv_prefix="config/sensor-1/", receive={"limit": 10})  # one per wake
    device.kv_put("config/sensor-1/interval", b"60", create_only=True)

As a command:

    http_device.py URL KEY SECRET publish TOPIC PAYLOAD [--qos N] [--retain] [--ttl S]
    http_device.py URL KEY SECRET subscribe FILTER [--qos N]
    http_device.py URL KEY SECRET receive [--wait S]
    http_device.py URL KEY SECRET time
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import ssl
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

SCHEME = "TERN1-HMAC-SHA256"
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode(data: bytes) -> str:
    """Percent-encode every byte but A-Z a-z 0-9 - . _ ~ (upper-case hex)."""
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02X}" for b in data)


def decode(text: str) -> bytes:
    """Percent-decode once (a '+' stays a plus)."""
    return urllib.parse.unquote_to_bytes(text)


def canonical_path(path: str) -> str:
    return "/".join(encode(decode(segment)) for segment in path.split("/"))


def canonical_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        pairs.append((encode(decode(name)), encode(decode(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(method: str, path: str, query: str,
                      headers: list[tuple[str, str]], body: bytes) -> str:
    """The string a request's signature covers (docs/http.md, "Signing")."""
    signed = [(n.lower(), v.strip()) for n, v in headers
              if n.lower().startswith(("tern-", "mqtt-")) and n.lower() != "tern-signature"
              or n.lower() in ("if-match", "if-none-match")]
    signed.sort(key=lambda pair: pair[0])  # stable: repeated headers keep their order
    lines = [SCHEME, method.upper(), canonical_path(path), canonical_query(query)]
    lines += [f"{n}:{v}" for n, v in signed]
    lines.append(hashlib.sha256(body).hexdigest())
    return "\n".join(lines)


def sign(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def response_string(status: int, bound_to: str, body: bytes, time_header: str) -> str:
    return (f"TERN1-RESP\n{status}\n{bound_to}\n"
            f"{hashlib.sha256(body).hexdigest()}\n{time_header}")


class SignatureError(Exception):
    """An answer whose signature does not verify: not from the broker, or not to this request."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def replayed(self) -> bool:
        return self.headers.get("tern-replayed") == "1"


@dataclass
class Device:
    """One device: the broker's base URL, its key id, its secret (64 hex digits)."""

    url: str
    key: str
    secret_hex: str
    client: Optional[str] = None  # Tern-Client, for an app key (a:APP)
    counter: Optional[int] = None  # counter nonces (clockless devices) when set
    clock: bool = True  # False: Tern-Time "-" (needs counter nonces)
    timeout: float = 10.0
    verify_responses: bool = True
    ssl_context: Optional[ssl.SSLContext] = None  # for https: the CA to trust, say
    last: Optional[dict[str, str]] = field(default=None, repr=False)  # last request's headers
    owed_ack: Optional[int] = None  # the mailbox acknowledgement the next poll carries
    last_body: bytes = field(default=b"", repr=False)  # the last sync's body, for resend()

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self.secret_hex)

    def next_nonce(self) -> str:
        if self.counter is None:
            return "r:" + secrets.token_hex(16)
        self.counter += 1
        return f"c:{self.counter:x}"

    def signed_headers(self, method: str, path_and_query: str, body: bytes = b"",
                       extra: Optional[list[tuple[str, str]]] = None,
                       nonce: Optional[str] = None, when: Optional[str] = None
                       ) -> list[tuple[str, str]]:
        """The headers of a signed request (Tern-Key, -Time, -Nonce, -Signature, and `extra`)."""
        path, _, query = path_and_query.partition("?")
        headers = [("Tern-Key", self.key),
                   ("Tern-Time", when or (str(int(time.time())) if self.clock else "-")),
                   ("Tern-Nonce", nonce or self.next_nonce())]
        if self.client is not None:
            headers.append(("Tern-Client", self.client))
        headers += extra or []
        canonical = canonical_request(method, path, query, headers, body)
        headers.append(("Tern-Signature", "v1=" + sign(self.secret, canonical)))
        return headers

    def send(self, method: str, path_and_query: str, headers: list[tuple[str, str]],
             body: bytes = b"", timeout: Optional[float] = None) -> Response:
        """Sends a request as given (signed or not) and reads the answer."""
        parsed = urllib.parse.urlsplit(self.url)
        connection: http.client.HTTPConnection
        timeout = timeout or self.timeout
        if parsed.scheme == "https":
            connection = http.client.HTTPSConnection(parsed.hostname, parsed.port,
                                                     timeout=timeout,
                                                     context=self.ssl_context)
        else:
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port,
                                                    timeout=timeout)
        try:
            connection.putrequest(method, path_and_query, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            answer = connection.getresponse()
            data = answer.read()
            received = {k.lower(): v for k, v in answer.getheaders()}
            return Response(answer.status, received, data)
        finally:
            connection.close()

    def request(self, method: str, path_and_query: str, body: bytes = b"",
                extra: Optional[list[tuple[str, str]]] = None,
                timeout: Optional[float] = None) -> Response:
        """Signs, sends, and checks the answer's signature (bound to this request's)."""
        headers = self.signed_headers(method, path_and_query, body, extra)
        self.last = dict(headers)
        response = self.send(method, path_and_query, headers, body, timeout)
        if self.verify_responses and response.status != 401:
            self.check(response, self.last["Tern-Signature"][3:])
        return response

    def check(self, response: Response, bound_to: str) -> None:
        """Raises SignatureError unless the answer is signed, by this key, for `bound_to`."""
        offered = [s.strip()[3:] for s in
                   response.headers.get("tern-response-signature", "").split(",") if s.strip()]
        expected = sign(self.secret, response_string(
            response.status, bound_to, response.body, response.headers.get("tern-time", "")))
        if not any(hmac.compare_digest(expected, s) for s in offered):
            raise SignatureError(f"answer {response.status} is not signed for this request")

    # -- the API --------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                ttl: Optional[int] = None, age: Optional[int] = None,
                content_type: Optional[str] = None, response_topic: Optional[str] = None,
                correlation_data: Optional[bytes] = None,
                user_properties: Optional[list[tuple[str, str]]] = None) -> Response:
        """POST /v1/pub/TOPIC: the payload as the body."""
        query = {"qos": str(qos)}
        if retain:
            query["retain"] = "1"
        if ttl is not None:
            query["ttl"] = str(ttl)
        if age is not None:
            query["age"] = str(age)
        path = "/v1/pub/" + "/".join(urllib.parse.quote(level, safe="")
                                     for level in topic.split("/"))
        extra: list[tuple[str, str]] = []
        if content_type:
            extra.append(("Content-Type", content_type))
        if response_topic:
            extra.append(("Mqtt-Response-Topic", response_topic))
        if correlation_data is not None:
            import base64
            extra.append(("Mqtt-Correlation-Data",
                          base64.urlsafe_b64encode(correlation_data).decode().rstrip("=")))
        for key, value in user_properties or []:
            extra.append(("Mqtt-User-Property", f"{key}={value}"))
        return self.request("POST", path + "?" + urllib.parse.urlencode(query), payload, extra)

    def publish_batch(self, items: list[dict[str, Any]], atomic: bool = False) -> Response:
        """POST /v1/pub: a JSON array of messages."""
        body = json.dumps(items).encode()
        path = "/v1/pub?atomic=1" if atomic else "/v1/pub"
        return self.request("POST", path, body, [("Content-Type", "application/json")])

    # -- the mailbox: the client's MQTT persistent session, read by polling ---------------------
    @staticmethod
    def _filter_path(topic_filter: str) -> str:
        return "/v1/mbox/subs/" + "/".join(urllib.parse.quote(level, safe="")
                                           for level in topic_filter.split("/"))

    def subscribe(self, topic_filter: str, qos: int = 1, retained: bool = True,
                  replay: Optional[int] = None) -> Response:
        """PUT /v1/mbox/subs/FILTER: the mailbox (made if need be) receives what matches;
        `replay` queues the last N messages kept for those topics ([[history]])."""
        fields: dict[str, int] = {"qos": qos, "retained": int(retained)}
        if replay is not None:
            fields["replay"] = replay
        query = urllib.parse.urlencode(fields)
        return self.request("PUT", self._filter_path(topic_filter) + "?" + query)

    def reset(self, latest: bool = False, replay: Optional[int] = None,
              seq: Optional[int] = None, since: Optional[int] = None) -> Response:
        """POST /v1/mbox/reset, to one of: the latest message (`latest`), the last `replay`
        kept, the sequence number `seq`, or what was kept since `since` (Unix seconds)."""
        body: dict[str, Any] = {}
        if latest:
            body["to"] = "latest"
        for name, value in (("replay", replay), ("seq", seq), ("time", since)):
            if value is not None:
                body[name] = value
        self.owed_ack = None  # what it owed is completed, or handed out again
        return self.request("POST", "/v1/mbox/reset", json.dumps(body).encode(),
                            [("Content-Type", "application/json")])

    def unsubscribe(self, topic_filter: str) -> Response:
        """DELETE /v1/mbox/subs/FILTER."""
        return self.request("DELETE", self._filter_path(topic_filter))

    def subscriptions(self) -> Response:
        """GET /v1/mbox/subs: the mailbox's subscriptions."""
        return self.request("GET", "/v1/mbox/subs")

    def poll(self, ack: Optional[int] = None, limit: Optional[int] = None,
             max_bytes: Optional[int] = None, wait: Optional[int] = None,
             lease: Optional[int] = None) -> Response:
        """GET /v1/mbox: acknowledges through `ack`, then hands out what waits (leased)."""
        query = {name: str(value) for name, value in
                 (("ack", ack), ("limit", limit), ("max_bytes", max_bytes), ("wait", wait),
                  ("lease", lease)) if value is not None}
        path = "/v1/mbox" + ("?" + urllib.parse.urlencode(query) if query else "")
        return self.request("GET", path, timeout=self.timeout + (wait or 0))

    def receive(self, wait: Optional[int] = None, limit: Optional[int] = None,
                lease: Optional[int] = None) -> list[dict[str, Any]]:
        """Polls, carrying the acknowledgement of what the last call returned (so each message
        is handled once the device has it, and completed by the next wake), and remembers the
        one it owes now. Returns the messages, oldest first."""
        response = self.poll(ack=self.owed_ack, limit=limit, wait=wait, lease=lease)
        if response.status != 200:
            raise RuntimeError(f"poll: {response.status} {response.body!r}")
        body = response.json()
        if body.get("next_ack") is not None:
            self.owed_ack = body["next_ack"]
        return body["messages"]

    def settle(self, ack: Optional[int] = None, nack: Optional[list[int]] = None,
               reject: Optional[list[int]] = None) -> Response:
        """POST /v1/mbox/ack: acknowledge through `ack`, give back `nack`, dead-letter `reject`."""
        body: dict[str, Any] = {"nack": nack or [], "reject": reject or []}
        if ack is not None:
            body["ack"] = ack
        return self.request("POST", "/v1/mbox/ack", json.dumps(body).encode(),
                            [("Content-Type", "application/json")])

    def dead_letters(self) -> Response:
        """GET /v1/mbox/dead."""
        return self.request("GET", "/v1/mbox/dead")

    def requeue(self, seqs: Optional[list[int]] = None) -> Response:
        """POST /v1/mbox/dead/requeue: queue dead letters again (all without `seqs`)."""
        body = json.dumps({} if seqs is None else {"seqs": seqs}).encode()
        return self.request("POST", "/v1/mbox/dead/requeue", body,
                            [("Content-Type", "application/json")])

    # -- one exchange per wake --------------------------------------------------------------------
    def sync(self, publish: Optional[list[dict[str, Any]]] = None, atomic: bool = False,
             kv_prefix: Optional[str] = None, kv_since: Optional[str] = None,
             receive: Optional[dict[str, int]] = None, ack: Optional[int] = None,
             next_wake: Optional[int] = None) -> Response:
        """POST /v1/sync: acknowledges (`ack`, else what the last receive owes), publishes,
        reads the key/value changes under `kv_prefix` since `kv_since` (the `etag` of the last
        answer's `kv`), and receives (`receive`: limit, wait, max_bytes, lease), in one
        request. Exactly once: if the answer is lost, `resend()` sends the same bytes again and
        gets the same answer, never a second effect."""
        body: dict[str, Any] = {}
        ack = self.owed_ack if ack is None else ack
        if ack is not None:
            body["ack"] = ack
        if publish:
            body["publish"] = publish
            body["atomic"] = atomic
        if kv_prefix is not None:
            body["kv"] = {"prefix": kv_prefix}
            if kv_since is not None:
                body["kv"]["since"] = kv_since
        if receive is not None:
            body["receive"] = receive
        if next_wake is not None:
            body["next_wake"] = next_wake
        data = json.dumps(body).encode()
        self.last_body = data
        wait = (receive or {}).get("wait", 0)
        response = self.request("POST", "/v1/sync", data, [("Content-Type", "application/json")],
                                timeout=self.timeout + wait)
        self._owe(response)
        return response

    def resend(self, method: str, path_and_query: str, body: bytes,
               timeout: Optional[float] = None) -> Response:
        """Sends the last signed request again, byte for byte (same nonce and signature): what a
        device does when it lost an answer. The answer is checked as the first one was."""
        assert self.last is not None, "nothing was sent"
        response = self.send(method, path_and_query, list(self.last.items()), body, timeout)
        if self.verify_responses and response.status != 401:
            self.check(response, self.last["Tern-Signature"][3:])
        return response

    def _owe(self, response: Response) -> None:
        """Remembers the acknowledgement an answer with messages makes owed."""
        if response.status == 200:
            next_ack = (response.json() or {}).get("next_ack")
            if next_ack is not None:
                self.owed_ack = next_ack

    # -- key/value: retained messages --------------------------------------------------------------
    @staticmethod
    def _key_path(key: str) -> str:
        return "/v1/kv/" + "/".join(urllib.parse.quote(level, safe="") for level in key.split("/"))

    def kv_get(self, key: str, missing_204: bool = False) -> Response:
        """GET /v1/kv/KEY: {"key", "etag", "payload" or "payload_b64"}, or 404 (204)."""
        return self.request("GET", self._key_path(key) + ("?missing=204" if missing_204 else ""))

    def kv_list(self, prefix: str, since: Optional[str] = None) -> Response:
        """GET /v1/kv/PREFIX/: the entries under PREFIX, or what changed since an ETag."""
        path = self._key_path(prefix.rstrip("/")) + "/"
        if since is not None:
            path += "?" + urllib.parse.urlencode({"since": since})
        return self.request("GET", path)

    def kv_put(self, key: str, value: bytes, if_match: Optional[str] = None,
               create_only: bool = False, ttl: Optional[int] = None,
               content_type: Optional[str] = None) -> Response:
        """PUT /v1/kv/KEY: sets the entry (a retained message); `if_match` (an ETag) or
        `create_only` make it conditional (412 when not met)."""
        extra: list[tuple[str, str]] = []
        if if_match is not None:
            extra.append(("If-Match", f'"{if_match}"'))
        if create_only:
            extra.append(("If-None-Match", "*"))
        if content_type:
            extra.append(("Content-Type", content_type))
        query = f"?ttl={ttl}" if ttl is not None else ""
        return self.request("PUT", self._key_path(key) + query, value, extra)

    def kv_delete(self, key: str, if_match: Optional[str] = None) -> Response:
        """DELETE /v1/kv/KEY: clears the entry (its retained message)."""
        extra = [("If-Match", f'"{if_match}"')] if if_match is not None else []
        return self.request("DELETE", self._key_path(key), b"", extra)

    # -- the same key over MQTT ------------------------------------------------------------------
    def mqtt_password(self, client_id: Optional[str] = None, when: Optional[int] = None) -> str:
        """The password to connect over MQTT as this key (user name: the key id; client id: the
        device's), so MQTT and HTTP are one identity with one session (docs/http.md). Valid
        within the broker's time window: send it over TLS."""
        client_id = client_id or self.client or self.key.split(":", 1)[1]
        seconds = int(time.time()) if when is None else when
        message = f"TERN1-MQTT\n{self.key}\n{client_id}\n{seconds}"
        return f"hk1:{seconds}:{sign(self.secret, message)}"

    def broker_time(self) -> int:
        """GET /v1/time with a fresh challenge: the broker's clock, checked by signature."""
        challenge = secrets.token_hex(16)
        headers = [("Tern-Key", self.key)]
        if self.client is not None:
            headers.append(("Tern-Client", self.client))
        response = self.send("GET", f"/v1/time?challenge={challenge}", headers)
        self.check(response, challenge)
        return int(response.json()["time"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Tern HTTP bridge device client")
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("secret", help="64 hex digits; '-' reads TERN_SECRET")
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish")
    pub.add_argument("topic")
    pub.add_argument("payload")
    pub.add_argument("--qos", type=int, default=1)
    pub.add_argument("--retain", action="store_true")
    pub.add_argument("--ttl", type=int)
    sub = commands.add_parser("subscribe")
    sub.add_argument("filter")
    sub.add_argument("--qos", type=int, default=1)
    receive = commands.add_parser("receive")
    receive.add_argument("--wait", type=int, default=0)
    receive.add_argument("--ack", type=int, help="acknowledge through this sequence number")
    commands.add_parser("time")
    args = parser.parse_args(argv)
    secret = os.environ.get("TERN_SECRET", "") if args.secret == "-" else args.secret
    device = Device(args.url, args.key, secret)
    if args.command == "time":
        print(device.broker_time())
        return 0
    if args.command in ("subscribe", "receive"):
        if args.command == "subscribe":
            answer = device.subscribe(args.filter, args.qos)
        else:
            answer = device.poll(ack=args.ack, wait=args.wait)
        print(answer.status, answer.body.decode(errors="replace"))
        return 0 if answer.status < 300 else 1
    response = device.publish(args.topic, args.payload.encode(), args.qos, args.retain, args.ttl)
    print(response.status, response.body.decode(errors="replace"))
    return 0 if response.status < 300 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
