from __future__ import annotations

import time
from collections import Counter

import anthropic
import httpx
import openai
import pytest

from relaygate.mock_upstream.faults import FaultConfig, FaultInjector, fault_for_model
from relaygate.mock_upstream.server import MockUpstreamThread

CHAT = {"messages": [{"role": "user", "content": "REPLY_WORDS 40"}]}
AUTH = {"Authorization": "Bearer k"}


def _chat(url: str, model: str, **extra: object) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"model": model, **CHAT, **extra}, headers=AUTH)


def test_model_name_conventions() -> None:
    assert fault_for_model("fail-503").fail_status == 503
    assert fault_for_model("hang").hang
    assert fault_for_model("slow-250").delay_ms == 250
    assert fault_for_model("cut-3").cut_after == 3
    assert fault_for_model("reply-hello world").reply_text == "hello world"
    assert fault_for_model("stall-2").stall_after == 2
    assert fault_for_model("error-1").error_after == 1
    assert fault_for_model("gpt-4o").is_clean and fault_for_model("fail-abc").is_clean


def test_seeded_fail_rate_within_tolerance_and_reproducible() -> None:
    config = FaultConfig(fail_rate=0.3, fail_codes=(429, 503), seed=42)
    with MockUpstreamThread(config) as upstream, httpx.Client(headers=AUTH) as http:
        statuses = [
            http.post(upstream.url + "/v1/chat/completions", json={"model": "gpt-4o", **CHAT}).status_code
            for _ in range(400)
        ]
        retry_after = http.post(upstream.url + "/v1/chat/completions", json={"model": "fail-429", **CHAT})
    counts = Counter(statuses)
    assert set(counts) <= {200, 429, 503}
    failed = counts[429] + counts[503]
    assert 0.22 <= failed / 400 <= 0.38, counts
    assert counts[429] > 30 and counts[503] > 30
    assert retry_after.headers["retry-after"] == "1"
    # The same seed decides the same faults for the same request order.
    replay = FaultInjector(config)
    expected = [replay.decide("gpt-4o", False).fail_status or 200 for _ in range(400)]
    assert expected == statuses


def test_fail_code_model_in_each_format(upstream_url: str) -> None:
    oa = openai.OpenAI(base_url=upstream_url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as oa_err:
        oa.chat.completions.create(model="fail-503", messages=[{"role": "user", "content": "x"}])
    assert oa_err.value.status_code == 503
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="fail-429", messages=[{"role": "user", "content": "x"}])
    an = anthropic.Anthropic(base_url=upstream_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as an_err:
        an.messages.create(model="fail-529", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert an_err.value.status_code == 529
    assert an_err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_cut_model_truncates_openai_stream(upstream_url: str) -> None:
    client = openai.OpenAI(base_url=upstream_url + "/v1", api_key="k", max_retries=0)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="cut-2", stream=True, **CHAT):  # type: ignore[call-overload]
            received.append(chunk)
    assert len(received) == 2


def test_cut_model_truncates_anthropic_stream(upstream_url: str) -> None:
    client = anthropic.Anthropic(base_url=upstream_url, api_key="k", max_retries=0)
    events = []
    # The anthropic SDK lets its HTTP client's error out of a broken stream unwrapped.
    with pytest.raises(Exception, match="incomplete chunked read|peer closed"), client.messages.stream(
        model="cut-3", max_tokens=100, messages=[{"role": "user", "content": "REPLY_WORDS 40"}]
    ) as stream:
        for event in stream:
            events.append(event.type)
    assert events and "message_stop" not in events


def test_cut_raw_stream_lacks_done(upstream_url: str) -> None:
    with httpx.stream("POST", upstream_url + "/v1/chat/completions", json={"model": "cut-1", "stream": True, **CHAT},
                      headers=AUTH) as r:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for part in r.iter_bytes():
                got += part
    assert got.count(b"data: ") == 1 and b"[DONE]" not in got


def test_hang_makes_client_timeout_fire(fresh_upstream: MockUpstreamThread) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            fresh_upstream.url + "/v1/chat/completions", json={"model": "hang", **CHAT}, headers=AUTH, timeout=0.4
        )
    assert 0.35 <= time.monotonic() - started < 2.0
    stats = httpx.get(fresh_upstream.url + "/_mock/stats").json()
    assert stats["by_outcome"] == {"hang": 1}


def test_slow_and_reply_models(upstream_url: str) -> None:
    started = time.monotonic()
    r = _chat(upstream_url, "slow-300")
    assert r.status_code == 200 and time.monotonic() - started >= 0.3
    r = _chat(upstream_url, "reply-hello world")
    assert r.json()["choices"][0]["message"]["content"] == "hello world"


def test_random_cut_rate_cuts_streams_only() -> None:
    with MockUpstreamThread(FaultConfig(cut_stream_rate=1.0, seed=3)) as upstream:
        assert _chat(upstream.url, "gpt-4o").status_code == 200
        with httpx.stream("POST", upstream.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "gpt-4o", "stream": True, **CHAT}) as r, \
                pytest.raises(httpx.RemoteProtocolError):
            r.read()


def test_latency_and_chunk_pacing() -> None:
    with MockUpstreamThread(FaultConfig(latency_ms=150, stream_chunk_ms=40)) as upstream:
        started = time.monotonic()
        with httpx.stream("POST", upstream.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "gpt-4o", "stream": True, **CHAT}) as r:
            arrivals = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.04 * (len(arrivals) - 2)


def test_stats_and_reset(fresh_upstream: MockUpstreamThread) -> None:
    url = fresh_upstream.url
    _chat(url, "gpt-4o")
    _chat(url, "gpt-4o")
    _chat(url, "fail-503")
    httpx.post(url + "/v1/messages", json={"model": "m", "messages": []},
               headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    stats = httpx.get(url + "/_mock/stats").json()
    assert stats["total"] == 4
    rows = {(r["kind"], r["model"], r["outcome"]): r["count"] for r in stats["requests"]}
    assert rows == {
        ("openai.chat", "gpt-4o", "ok"): 2,
        ("openai.chat", "fail-503", "fail_503"): 1,
        ("anthropic.messages", "m", "rejected_400"): 1,
    }
    assert httpx.post(url + "/_mock/reset").status_code == 200
    assert httpx.get(url + "/_mock/stats").json()["total"] == 0


def test_invalid_fault_config_is_refused() -> None:
    with pytest.raises(ValueError):
        FaultConfig(fail_rate=1.5)
    with pytest.raises(ValueError):
        FaultConfig(fail_codes=(200,))


def test_stall_model_goes_silent_mid_stream(fresh_upstream: MockUpstreamThread) -> None:
    received = []
    timeout = httpx.Timeout(5.0, read=0.4)
    with httpx.stream("POST", fresh_upstream.url + "/v1/chat/completions", headers=AUTH, timeout=timeout,
                      json={"model": "stall-2", "stream": True, **CHAT}) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            for line in r.iter_lines():
                if line:
                    received.append(line)
    assert len(received) == 2
    assert httpx.get(fresh_upstream.url + "/_mock/stats").json()["by_outcome"] == {"stall": 1}


def test_stall_model_without_stream_sends_half_a_body() -> None:
    with MockUpstreamThread() as upstream, pytest.raises(httpx.ReadTimeout):
        httpx.post(upstream.url + "/v1/chat/completions", json={"model": "stall-1", **CHAT}, headers=AUTH,
                   timeout=httpx.Timeout(5.0, read=0.4))


def test_error_model_ends_openai_stream_with_error_event(upstream_url: str) -> None:
    r = httpx.post(upstream_url + "/v1/chat/completions", headers=AUTH,
                   json={"model": "error-2", "stream": True, **CHAT})
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 3 and "[DONE]" not in r.text
    assert events[-1].startswith('data: {"error":')
    client = openai.OpenAI(base_url=upstream_url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="error-2", stream=True, **CHAT))  # type: ignore[call-overload]
    # Without a stream there is no event to carry the error: the request fails with a 500.
    assert _chat(upstream_url, "error-2").status_code == 500


def test_error_model_ends_anthropic_stream_with_error_event(upstream_url: str) -> None:
    client = anthropic.Anthropic(base_url=upstream_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err, client.messages.stream(
        model="error-2", max_tokens=100, messages=[{"role": "user", "content": "REPLY_WORDS 40"}]
    ) as stream:
        for _ in stream:
            pass
    assert "overloaded_error" in str(err.value)


def test_error_model_in_bedrock_and_gemini_streams(upstream_url: str) -> None:
    import botocore.session
    from botocore.exceptions import EventStreamError

    bedrock = botocore.session.get_session().create_client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=upstream_url,
        aws_access_key_id="AKID", aws_secret_access_key="s")
    r = bedrock.converse_stream(modelId="error-1", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    with pytest.raises(EventStreamError) as err:
        list(r["stream"])
    assert err.value.response["Error"]["Code"] == "modelStreamErrorException"
    bedrock.close()
    gemini = httpx.post(upstream_url + "/v1beta/models/error-1:streamGenerateContent?alt=sse",
                        headers={"x-goog-api-key": "k"},
                        json={"contents": [{"role": "user", "parts": [{"text": "REPLY_WORDS 30"}]}]})
    events = [e for e in gemini.text.split("\r\n\r\n") if e]
    assert len(events) == 2 and events[-1].startswith('data: {"error":')
