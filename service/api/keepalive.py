"""Byte framing that keeps a long OpenAI-compatible request alive without changing what its body parses as.

SPCS ingress ends a connection that has had no activity for 90 s ("Ingress connection timeout" in
https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications),
while a long file can take many minutes. So `routes_openai` sends the 200 and its headers once a request has
waited `openai_keepalive_s`, then a line feed every `openai_keepalive_s` until the job ends, then the body:

- json, verbose_json: line feeds are JSON whitespace; the body still parses as the same JSON document.
- text, srt: the transcript follows blank lines (SubRip parsers skip blank lines before a cue; plain text
  readers should strip, as the byte-exact answer is kept for requests that finish before the first keep-alive).
- vtt: a WebVTT file must start with `WEBVTT`, so that line goes first; blank lines may follow a header
  (the parser skips any number of line feeds before the first block), then the cues.

Once the 200 is sent the status cannot change: a job that fails (or outlives `openai_max_wait_s`) ends the
body with an OpenAI-style error object, `{"error": {"message", "type", "param", "code", "status", "job_id",
...}}`, where `status` is the HTTP status it would have had (as OpenAI answers it: a bad file is 400): the
whole body for json formats (after the whitespace), its last line for text and srt, and a `NOTE` comment block
for vtt (the file stays valid WebVTT and has no cues).
"""

from __future__ import annotations

import json
from typing import Any

from service.api import openai_errors

KEEPALIVE = "\n"
VTT_HEADER = "WEBVTT\n"


def opening(fmt: str) -> str:
    """The first bytes, sent with the headers."""
    return VTT_HEADER if fmt == "vtt" else KEEPALIVE


def remainder(fmt: str, body: str) -> str:
    """What follows the keep-alives: the rendered body less what `opening` already sent."""
    if fmt == "vtt":
        if not body.startswith(VTT_HEADER):
            raise ValueError("a WebVTT body must start with its header")
        return body[len(VTT_HEADER) :]
    return body


def error_object(status: int, code: str, message: str, **details: Any) -> dict[str, Any]:
    """OpenAI's error envelope (`message`, `type`, `param`, `code`: openai_errors.py) plus the status it stands
    for, as OpenAI would have answered it (a bad file is 400), and details."""
    sent, body = openai_errors.envelope(status, code, message, **details)
    body["error"]["status"] = sent
    return body


def error_tail(fmt: str, error: dict[str, Any]) -> str:
    """The end of a body whose job did not give a result after the 200 was sent."""
    line = json.dumps(error, ensure_ascii=False)
    if fmt in ("json", "verbose_json"):
        return line
    if fmt == "vtt":  # a comment block: no blank line and no "-->" inside
        return "\nNOTE " + line.replace("-->", "->") + "\n"
    return line + "\n"
