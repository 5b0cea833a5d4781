"""What the fidelity matrix needs: the providers under test (adapters bound to fake
secrets), inbound request bodies per feature in both client formats, a uniform view of
each provider's upstream body, recorded wire bytes, and a client-side view of answers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from relaygate.config.models import ProviderConfig
from relaygate.formats import anthropic as anthropic_fmt
from relaygate.formats import openai as openai_fmt
from relaygate.formats.types import ChatRequest, ChatResponse, StreamEvent, collect_stream
from relaygate.providers.base import ChatCall, ProviderAdapter, UpstreamRequest
from relaygate.providers.registry import ADAPTERS

RECORDED = Path(__file__).parent / "recorded"
INBOUND = ("openai", "anthropic")
PROVIDERS = ("openai", "anthropic", "bedrock-converse", "bedrock-invoke", "gemini", "azure-openai")

# Fake secrets: the error tests check none of them leaks into a message.
SECRETS = {
    "openai": "sk-proj-fidelityOPENAIkey0001",
    "anthropic": "sk-ant-api03-fidelityANTHROPIC01",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYfidelity01",
    "aws_id": "AKIAFIDELITYTEST0001",
    "gemini": "AIzaSyFidelityGeminiKey000000000001",
    "azure": "0123456789abcdef0123456789fidelity",
}
AWS = {"region": "us-west-2", "aws_access_key_id": SECRETS["aws_id"], "aws_secret_access_key": SECRETS["aws_secret"]}
CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "openai": ({"type": "openai", "api_key": SECRETS["openai"]}, "gpt-4o"),
    "anthropic": ({"type": "anthropic", "api_key": SECRETS["anthropic"]}, "claude-sonnet-4-5"),
    "bedrock-converse": ({"type": "bedrock", **AWS}, "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    "bedrock-invoke": ({"type": "bedrock", **AWS}, "invoke/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    "gemini": ({"type": "gemini", "api_key": SECRETS["gemini"]}, "gemini-2.5-flash"),
    "azure-openai": ({"type": "azure-openai", "api_key": SECRETS["azure"],
                      "base_url": "https://contoso.openai.azure.com"}, "gpt-4o-prod"),
}
FAMILY = {"openai": "openai", "azure-openai": "openai", "anthropic": "anthropic", "bedrock-invoke": "anthropic",
          "bedrock-converse": "converse", "gemini": "gemini"}
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()
TOOLS = [
    ("get_weather", "Current weather for a location",
     {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"],
      "additionalProperties": False}),
    ("get_time", "Current time in a timezone",
     {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}),
]
JSON_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temperature_c": {"type": ["number", "null"]}},
               "required": ["city", "temperature_c"], "additionalProperties": False}


def adapter(provider: str) -> tuple[ProviderAdapter, str]:
    raw, model = CONFIGS[provider]
    cfg = ProviderConfig.model_validate(raw)
    return ADAPTERS[cfg.type](provider, cfg, None), model


def recorded(provider: str, name: str) -> bytes:
    return (RECORDED / provider / name).read_bytes()


def recorded_http(provider: str, name: str) -> tuple[int, dict[str, str], bytes]:
    """A recorded HTTP response: status line, headers, blank line, body."""
    raw = recorded(provider, name)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip()] = v.strip()
    return status, headers, body


# --- inbound bodies ----------------------------------------------------------------------


def _tools(fmt: str) -> list[dict[str, Any]]:
    if fmt == "openai":
        return [{"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in TOOLS]
    return [{"name": n, "description": d, "input_schema": p} for n, d, p in TOOLS]


def inbound_body(feature: str, fmt: str, stream: bool = False) -> dict[str, Any]:
    """The client's request for one matrix feature, in its wire format."""
    o = fmt == "openai"
    body: dict[str, Any] = {"model": "route", "messages": [{"role": "user", "content": "Hello"}]}
    if not o:
        body["max_tokens"] = 1024
    if feature == "system":
        if o:
            body["messages"].insert(0, {"role": "system", "content": "You are terse."})
        else:
            body["system"] = "You are terse."
    elif feature == "multi_turn":
        body["messages"] = [{"role": "user", "content": "My name is Ada."},
                            {"role": "assistant", "content": "Nice to meet you, Ada."},
                            {"role": "user", "content": "What is my name?"}]
    elif feature == "images":
        if o:
            body["messages"] = [{"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]
        else:
            body["messages"] = [{"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]
    elif feature == "image_url":
        url = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
        if o:
            body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                              {"type": "image_url", "image_url": {"url": url}}]}]
        else:
            body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                              {"type": "image", "source": {"type": "url", "url": url}}]}]
    elif feature in ("tools", "stream_tools"):
        body["tools"] = _tools(fmt)
        if o:
            body["tool_choice"] = "auto"
            body["messages"] = [
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                    {"id": "call_t1", "type": "function", "function": {"name": "get_time", "arguments": "{\"timezone\":\"Europe/Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_w1", "content": "{\"temp_c\": 18}"},
                {"role": "tool", "tool_call_id": "call_t1", "content": "14:05"},
                {"role": "user", "content": "And tomorrow?"}]
        else:
            body["tool_choice"] = {"type": "auto"}
            body["messages"] = [
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "call_t1", "name": "get_time", "input": {"timezone": "Europe/Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_w1", "content": "{\"temp_c\": 18}"},
                    {"type": "tool_result", "tool_use_id": "call_t1", "content": [{"type": "text", "text": "14:05"}]},
                    {"type": "text", "text": "And tomorrow?"}]}]
    elif feature == "json_schema":
        if o:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "weather", "strict": True, "schema": JSON_SCHEMA}}
    elif feature == "stop_sequences":
        if o:
            body["stop"] = ["END"]
        else:
            body["stop_sequences"] = ["END"]
    elif feature == "max_tokens":
        if o:
            body["max_tokens"] = 16
        else:
            body["max_tokens"] = 16
    elif feature == "sampling":
        body["temperature"] = 0.3
        body["top_p"] = 0.9
    if stream:
        body["stream"] = True
        if o:
            body["stream_options"] = {"include_usage": True}
    return body


def parse_inbound(fmt: str, body: dict[str, Any]) -> ChatRequest:
    return openai_fmt.parse_request(body) if fmt == "openai" else anthropic_fmt.parse_request(body)


def upstream_for(provider: str, fmt: str, body: dict[str, Any]) -> tuple[ProviderAdapter, UpstreamRequest, dict[str, Any]]:
    """What the gateway sends upstream for this client body (native bodies pass through
    when the provider speaks the client's format, as CallStage does)."""
    a, model = adapter(provider)
    req = parse_inbound(fmt, body)
    native = body if a.native_format == fmt else None
    up = a.chat_request(ChatCall(req, model, {}, native))
    return a, up, orjson.loads(up.body)


# --- a uniform view of upstream bodies ---------------------------------------------------


@dataclass
class Sent:
    roles: list[str]
    system: str
    texts: list[str]
    images: list[tuple[str, str]]  # (media type, base64 data)
    tool_names: list[str]
    tool_calls: list[tuple[str, str]]  # (id or "", name) in the history
    tool_results: list[tuple[str, str]]  # (id or function name, text)
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str] | None
    stream: bool


def view(provider: str, up: UpstreamRequest, sent: dict[str, Any]) -> Sent:
    fam = FAMILY[provider]
    roles: list[str] = []
    texts: list[str] = []
    images: list[tuple[str, str]] = []
    calls: list[tuple[str, str]] = []
    results: list[tuple[str, str]] = []
    system = ""
    if fam == "openai":
        for m in sent["messages"]:
            if m["role"] == "system":
                system += m["content"]
                continue
            roles.append({"tool": "user"}.get(m["role"], m["role"]))
            content = m.get("content")
            if isinstance(content, str):
                texts.append(content) if m["role"] != "tool" else None
            for p in content if isinstance(content, list) else []:
                if p["type"] == "text":
                    texts.append(p["text"])
                elif p["type"] == "image_url":
                    url = p["image_url"]["url"]
                    head, _, data = url.partition(",")
                    images.append((head[5:].split(";")[0], data) if url.startswith("data:") else ("url", url))
            for c in m.get("tool_calls") or []:
                calls.append((c["id"], c["function"]["name"]))
            if m["role"] == "tool":
                results.append((m["tool_call_id"], m["content"]))
        tools = [t["function"]["name"] for t in sent.get("tools") or []]
        gen = sent
        max_tokens = sent.get("max_completion_tokens", sent.get("max_tokens"))
        stop = sent.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        return Sent(_dedupe(roles), system, texts, images, tools, calls, results, max_tokens, gen.get("temperature"),
                    gen.get("top_p"), stop, bool(sent.get("stream")))
    if fam == "anthropic":
        sysv = sent.get("system") or ""
        system = sysv if isinstance(sysv, str) else "".join(b["text"] for b in sysv)
        for m in sent["messages"]:
            roles.append(m["role"])
            content = m["content"]
            for b in [{"type": "text", "text": content}] if isinstance(content, str) else content:
                if b["type"] == "text":
                    texts.append(b["text"])
                elif b["type"] == "image":
                    s = b["source"]
                    images.append((s["media_type"], s["data"]) if s["type"] == "base64" else ("url", s["url"]))
                elif b["type"] == "tool_use":
                    calls.append((b["id"], b["name"]))
                elif b["type"] == "tool_result":
                    c = b["content"]
                    results.append((b["tool_use_id"], c if isinstance(c, str) else "".join(x["text"] for x in c)))
        tools = [t["name"] for t in sent.get("tools") or []]
        stream = bool(sent.get("stream")) or up.url.endswith("invoke-with-response-stream")
        return Sent(roles, system, texts, images, tools, calls, results, sent.get("max_tokens"),
                    sent.get("temperature"), sent.get("top_p"), sent.get("stop_sequences"), stream)
    if fam == "converse":
        system = "".join(b.get("text", "") for b in sent.get("system") or [])
        for m in sent["messages"]:
            roles.append(m["role"])
            for b in m["content"]:
                if "text" in b:
                    texts.append(b["text"])
                elif "image" in b:
                    images.append(("image/" + b["image"]["format"], b["image"]["source"]["bytes"]))
                elif "toolUse" in b:
                    calls.append((b["toolUse"]["toolUseId"], b["toolUse"]["name"]))
                elif "toolResult" in b:
                    r = b["toolResult"]
                    results.append((r["toolUseId"], "".join(c.get("text", "") for c in r["content"])))
        tools = [t["toolSpec"]["name"] for t in (sent.get("toolConfig") or {}).get("tools") or []]
        inf = sent.get("inferenceConfig") or {}
        return Sent(roles, system, texts, images, tools, calls, results, inf.get("maxTokens"), inf.get("temperature"),
                    inf.get("topP"), inf.get("stopSequences"), up.url.endswith("/converse-stream"))
    # gemini
    system = "".join(p["text"] for p in (sent.get("systemInstruction") or {}).get("parts") or [])
    for c in sent["contents"]:
        roles.append("assistant" if c["role"] == "model" else "user")
        for p in c["parts"]:
            if "text" in p:
                texts.append(p["text"])
            elif "inlineData" in p:
                images.append((p["inlineData"]["mimeType"], p["inlineData"]["data"]))
            elif "functionCall" in p:
                calls.append(("", p["functionCall"]["name"]))
            elif "functionResponse" in p:
                r = p["functionResponse"]
                results.append((r["name"], orjson.dumps(r["response"]).decode()))
    tools = [d["name"] for t in sent.get("tools") or [] for d in t.get("functionDeclarations") or []]
    g = sent.get("generationConfig") or {}
    return Sent(roles, system, texts, images, tools, calls, results, g.get("maxOutputTokens"), g.get("temperature"),
                g.get("topP"), g.get("stopSequences"), ":streamGenerateContent" in up.url)


def _dedupe(roles: list[str]) -> list[str]:
    """OpenAI's consecutive tool messages and the user turn after them are one user turn."""
    out: list[str] = []
    for r in roles:
        if not out or out[-1] != r:
            out.append(r)
    return out


# --- the client's view of an answer ------------------------------------------------------


@dataclass
class Seen:
    text: str
    tool_calls: list[tuple[str, str, Any]]  # (id, name, parsed arguments)
    finish: str | None
    input_tokens: int  # the whole prompt, cache included
    output_tokens: int
    cache_read: int
    cache_write: int | None  # None: the client format has no field for it
    reasoning_tokens: int | None
    thinking: str | None  # None: the client format has no place for it
    raw: dict[str, Any]


def client_view(fmt: str, resp: ChatResponse, native_bytes: bytes | None = None) -> Seen:
    """The answer as the client receives it (passed through unchanged when native)."""
    if fmt == "openai":
        body = orjson.loads(native_bytes) if native_bytes is not None else openai_fmt.dump_response(resp, "route")
        msg = body["choices"][0]["message"]
        calls = [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                 for c in msg.get("tool_calls") or []]
        u = body["usage"]
        return Seen(msg.get("content") or "", calls, body["choices"][0]["finish_reason"], u["prompt_tokens"],
                    u["completion_tokens"], (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0), None,
                    (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0), None, body)
    body = orjson.loads(native_bytes) if native_bytes is not None else anthropic_fmt.dump_response(resp, "route")
    text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
    calls = [(b["id"], b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]
    thinking = "".join(b["thinking"] for b in body["content"] if b["type"] == "thinking")
    u = body["usage"]
    read, write = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
    return Seen(text, calls, body["stop_reason"], u["input_tokens"] + read + write, u["output_tokens"], read, write,
                None, thinking, body)


def decode_stream(a: ProviderAdapter, data: bytes, piece: int = 7) -> list[StreamEvent]:
    """Feeds recorded stream bytes in small pieces (framing must survive any split)."""
    decoder = a.stream_decoder()
    events: list[StreamEvent] = []
    for i in range(0, len(data), piece):
        events.extend(decoder.feed(data[i:i + piece]))
    events.extend(decoder.close())
    return events


def client_stream(fmt: str, events: list[StreamEvent]) -> tuple[bytes, ChatResponse]:
    """Encodes events for the client, then reads the client's bytes back as its SDK would."""
    enc: openai_fmt.StreamEncoder | anthropic_fmt.StreamEncoder
    if fmt == "openai":
        enc = openai_fmt.StreamEncoder("route", True, "rid")
        back: openai_fmt.StreamDecoder | anthropic_fmt.StreamDecoder = openai_fmt.StreamDecoder()
    else:
        enc = anthropic_fmt.StreamEncoder("route", "rid")
        back = anthropic_fmt.StreamDecoder()
    wire = b"".join(enc.encode(e) for e in events) + enc.close()
    parsed = back.feed(wire) + back.close()
    return wire, collect_stream(parsed)
