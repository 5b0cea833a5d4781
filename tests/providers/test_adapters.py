"""Provider specifics beyond the matrix: Bedrock model selection, path encoding, signing
and credentials; Gemini/Vertex URLs and schemas; Azure auth; embeddings on recorded bodies."""

from __future__ import annotations

import orjson
import pytest
from botocore.credentials import Credentials

from relaygate.config.models import ProviderConfig
from relaygate.errors import GatewayError, UpstreamError
from relaygate.formats import openai as openai_fmt
from relaygate.providers.azure import AzureOpenAIAdapter
from relaygate.providers.base import ChatCall, EmbeddingsAdapter, EmbeddingsCall
from relaygate.providers.bedrock import BedrockAdapter, split_model
from relaygate.providers.bedrock.signing import AwsSigner
from relaygate.providers.gemini import GeminiAdapter
from relaygate.providers.gemini.schema import gemini_schema
from relaygate.providers.registry import ADAPTERS
from tests.providers.fidelity import recorded

AWS = {"region": "eu-central-1", "aws_access_key_id": "AKIAADAPTERTEST00001", "aws_secret_access_key": "adapter-secret-1"}


def chat(stream: bool = False) -> ChatCall:
    req = openai_fmt.parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    return ChatCall(req, "")


def bedrock(**extra: object) -> BedrockAdapter:
    return BedrockAdapter("bedrock-eu", ProviderConfig.model_validate({"type": "bedrock", **AWS, **extra}))


def test_registry_knows_every_provider_type() -> None:
    for kind in ("bedrock", "gemini", "vertex", "azure-openai", "openai", "anthropic"):
        assert kind in ADAPTERS


@pytest.mark.parametrize(("model", "api", "model_id"), [
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "converse", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("invoke/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "invoke", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("converse/meta.llama3-70b-instruct-v1:0", "converse", "meta.llama3-70b-instruct-v1:0"),
])
def test_bedrock_api_from_model_prefix(model: str, api: str, model_id: str) -> None:
    assert split_model(model) == (api, model_id)


def test_bedrock_inference_profile_arn_is_one_path_segment() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    call = chat()
    call.model = arn
    up = bedrock().chat_request(call)
    assert up.url == ("https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
                      "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123/converse")


def test_bedrock_signature_covers_the_encoded_path() -> None:
    call = chat(stream=True)
    call.model = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    up = bedrock().chat_request(call)
    assert up.url.endswith("/converse-stream")
    signed = up.sign(up)
    auth = signed.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAADAPTERTEST00001/")
    assert "/eu-central-1/bedrock/aws4_request" in auth and "SignedHeaders=" in auth
    # The request target on the wire keeps %3A exactly as signed (decoding it breaks the signature).
    from relaygate.providers.h1 import split_url

    assert split_url(signed.url)[1].endswith("v1%3A0/converse-stream")
    assert "adapter-secret-1" not in str(signed.headers)


def test_bedrock_api_key_is_a_bearer_token() -> None:
    adapter = BedrockAdapter("b", ProviderConfig.model_validate({"type": "bedrock", "api_key": "bedrock-api-key-123"}))
    call = chat()
    call.model = "amazon.nova-pro-v1:0"
    up = adapter.chat_request(call)
    assert up.sign(up).headers["authorization"] == "Bearer bedrock-api-key-123"
    assert "bedrock-api-key-123" in adapter.secrets()


def test_bedrock_credentials_from_the_chain_or_a_clear_401(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ProviderConfig.model_validate({"type": "bedrock", "region": "us-east-1"})
    chain = Credentials("AKIACHAINCREDS000001", "chain-secret")
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: chain)
    signer = AwsSigner("b", cfg, "us-east-1")
    assert signer.credentials().access_key == "AKIACHAINCREDS000001"
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: None)
    with pytest.raises(UpstreamError) as info:
        AwsSigner("b", cfg, "us-east-1").credentials()
    assert info.value.status == 401 and "no AWS credentials" in info.value.message


def test_bedrock_converse_body_details() -> None:
    req = openai_fmt.parse_request({
        "model": "m", "max_tokens": 100, "temperature": 1.5, "messages": [
            {"role": "user", "content": "first"}, {"role": "user", "content": "second"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "found"}],
        "tool_choice": "none"})
    body = orjson.loads(bedrock().chat_request(ChatCall(req, "anthropic.claude-3-haiku-20240307-v1:0")).body)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # merged, alternating
    assert body["messages"][0]["content"] == [{"text": "first"}, {"text": "second"}]
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 1.0}  # Claude's range
    # History with tool blocks needs a toolConfig even when the client sent no tools.
    assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "lookup"


def test_gemini_and_vertex_urls_and_auth() -> None:
    studio = GeminiAdapter("g", ProviderConfig.model_validate({"type": "gemini", "api_key": "AIzaTest"}))
    up = studio.chat_request(ChatCall(chat(stream=True).request, "models/gemini-2.0-flash"))
    assert up.url == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
                      ":streamGenerateContent?alt=sse")
    assert up.headers["x-goog-api-key"] == "AIzaTest" and "key=" not in up.url
    vertex = GeminiAdapter("v", ProviderConfig.model_validate(
        {"type": "vertex", "api_key": "ya29.token", "project": "my-proj", "location": "europe-west4"}))
    up = vertex.chat_request(ChatCall(chat().request, "gemini-2.5-pro"))
    assert up.url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4"
                      "/publishers/google/models/gemini-2.5-pro:generateContent")
    assert up.headers["authorization"] == "Bearer ya29.token"
    glob = GeminiAdapter("v", ProviderConfig.model_validate({"type": "vertex", "project": "p", "location": "global"}))
    assert glob.url.startswith("https://aiplatform.googleapis.com/v1/projects/p/locations/global/")
    with pytest.raises(ValueError, match="project"):
        GeminiAdapter("v", ProviderConfig.model_validate({"type": "vertex"}))


def test_gemini_schema_inlines_refs_and_rejects_recursion() -> None:
    schema = {"type": "object", "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}},
                                                   "additionalProperties": False}},
              "properties": {"city": {"$ref": "#/$defs/City"}, "tags": {"type": "array", "items": {"type": "string"}}}}
    out = gemini_schema(schema, "response_format")
    assert out == {"type": "object", "properties": {
        "city": {"type": "object", "properties": {"name": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}}}}
    loop = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "$ref": "#/$defs/Node"}
    with pytest.raises(GatewayError, match="recursive"):
        gemini_schema(loop, "response_format")


def test_gemini_tool_result_for_an_unknown_call_is_a_clear_400() -> None:
    req = openai_fmt.parse_request({"model": "m", "messages": [
        {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_missing", "content": "r"}]})
    studio = GeminiAdapter("g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"}))
    with pytest.raises(GatewayError) as info:
        studio.chat_request(ChatCall(req, "gemini-2.5-flash"))
    assert info.value.status == 400 and "call_missing" in info.value.message


def test_azure_entra_token_replaces_api_key() -> None:
    cfg = ProviderConfig.model_validate({"type": "azure-openai", "base_url": "https://r.openai.azure.com/openai/",
                                         "api_version": "2025-04-01-preview",
                                         "headers": {"Authorization": "Bearer entra-token"}})
    a = AzureOpenAIAdapter("az", cfg)
    up = a.chat_request(ChatCall(chat().request, "dep-1"))
    assert up.url == "https://r.openai.azure.com/openai/deployments/dep-1/chat/completions?api-version=2025-04-01-preview"
    assert up.headers["Authorization"] == "Bearer entra-token" and "api-key" not in up.headers
    with pytest.raises(ValueError, match="base_url"):
        AzureOpenAIAdapter("az", ProviderConfig.model_validate({"type": "azure-openai", "api_key": "k"}))


# --- embeddings on recorded bodies -------------------------------------------------------

VEC0 = [0.0132, -0.0201, 0.0457, 0.0112]
VEC1 = [-0.0311, 0.0023, 0.0291, -0.0177]


@pytest.mark.parametrize(("provider", "cfg", "file", "headers", "tokens"), [
    ("openai", {"type": "openai", "api_key": "k"}, "embeddings.json", {}, 5),
    ("azure-openai", {"type": "azure-openai", "api_key": "k", "base_url": "https://r.openai.azure.com"},
     "embeddings.json", {}, 5),
    ("gemini", {"type": "gemini", "api_key": "k"}, "embed_batch.json", {}, 0),
    ("gemini", {"type": "vertex", "api_key": "k", "project": "p"}, "embed_vertex_predict.json", {}, 5),
    ("bedrock-converse", {"type": "bedrock", **AWS}, "embed_cohere.json",
     {"x-amzn-bedrock-input-token-count": "6"}, 6),
])
def test_parse_embeddings(provider: str, cfg: dict[str, object], file: str, headers: dict[str, str],
                          tokens: int) -> None:
    pc = ProviderConfig.model_validate(cfg)
    a = ADAPTERS[pc.type]("p", pc, None)
    assert isinstance(a, EmbeddingsAdapter)
    result = a.parse_embeddings(recorded(provider, file), headers)
    assert result.vectors == [pytest.approx(VEC0), pytest.approx(VEC1)]  # index order, not body order
    assert result.input_tokens == tokens


def test_titan_is_one_call_per_input_and_cohere_batches() -> None:
    a = bedrock()
    calls = a.embeddings_request(EmbeddingsCall(["a", "b", "c"], "amazon.titan-embed-text-v2:0", 256))
    assert len(calls) == 3 and all(c.url.endswith("/model/amazon.titan-embed-text-v2%3A0/invoke") for c in calls)
    assert orjson.loads(calls[1].body) == {"inputText": "b", "dimensions": 256}
    titan = a.parse_embeddings(recorded("bedrock-converse", "embed_titan.json"))
    assert titan.vectors == [pytest.approx(VEC0)] and titan.input_tokens == 3
    many = a.embeddings_request(EmbeddingsCall([f"t{i}" for i in range(200)], "cohere.embed-english-v3"))
    assert [len(orjson.loads(c.body)["texts"]) for c in many] == [96, 96, 8]
    assert orjson.loads(many[0].body)["input_type"] == "search_document"
    with pytest.raises(GatewayError, match="not a supported embedding model"):
        a.embeddings_request(EmbeddingsCall(["a"], "anthropic.claude-3-haiku-20240307-v1:0"))


def test_gemini_embeddings_request_shapes() -> None:
    studio = GeminiAdapter("g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"}))
    [up] = studio.embeddings_request(EmbeddingsCall(["a", "b"], "text-embedding-004", 64))
    assert up.url.endswith("/v1beta/models/text-embedding-004:batchEmbedContents")
    assert orjson.loads(up.body)["requests"][1] == {"model": "models/text-embedding-004",
                                                    "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 64}
    vertex = GeminiAdapter("v", ProviderConfig.model_validate({"type": "vertex", "api_key": "k", "project": "p"}))
    [up] = vertex.embeddings_request(EmbeddingsCall(["a"], "text-embedding-005"))
    assert up.url.endswith("/publishers/google/models/text-embedding-005:predict")
    assert orjson.loads(up.body) == {"instances": [{"content": "a"}]}


def tool_history() -> ChatCall:
    req = openai_fmt.parse_request({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"}, {"role": "tool", "tool_call_id": "b", "content": "2"}]})
    return ChatCall(req, "")


@pytest.mark.parametrize(("model", "signed"), [("gemini-3-pro-preview", True), ("gemini-2.5-flash", False)])
def test_gemini_3_replayed_calls_carry_the_documented_sentinel(model: str, signed: bool) -> None:
    studio = GeminiAdapter("g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"}))
    call = tool_history()
    call.model = model
    parts = orjson.loads(studio.chat_request(call).body)["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == (
        ["skip_thought_signature_validator", None] if signed else [None, None])


def test_claude_thinking_reaches_bedrock_both_ways() -> None:
    from relaygate.formats import anthropic as anthropic_fmt

    req = anthropic_fmt.parse_request({"model": "m", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
                                       "messages": [{"role": "user", "content": "think"}]})
    a = bedrock()
    converse = orjson.loads(a.chat_request(ChatCall(req, "us.anthropic.claude-sonnet-4-5-20250929-v1:0")).body)
    assert converse["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    invoke = orjson.loads(a.chat_request(ChatCall(req, "invoke/us.anthropic.claude-sonnet-4-5-20250929-v1:0")).body)
    assert invoke["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "toolConfig" not in converse


def test_vertex_gemini_embedding_is_one_instance_per_call() -> None:
    vertex = GeminiAdapter("v", ProviderConfig.model_validate({"type": "vertex", "api_key": "k", "project": "p"}))
    assert len(vertex.embeddings_request(EmbeddingsCall(["a", "b", "c"], "gemini-embedding-001"))) == 3


def test_gemini_tool_result_images_follow_the_function_response() -> None:
    from relaygate.formats import anthropic as anthropic_fmt

    req = anthropic_fmt.parse_request({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "shoot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "s1", "content": [
            {"type": "text", "text": "done"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}]}]}]})
    studio = GeminiAdapter("g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"}))
    parts = orjson.loads(studio.chat_request(ChatCall(req, "gemini-2.5-flash")).body)["contents"][2]["parts"]
    assert parts == [{"functionResponse": {"name": "screenshot", "response": {"content": "done"}}},
                     {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}]


def _frame(kind: str, payload: dict[str, object], message_type: str = "event") -> bytes:
    from relaygate.mock_upstream.eventstream import encode_message

    if message_type == "error":
        return encode_message({":message-type": "error", ":error-code": kind,
                               ":error-message": str(payload.get("message", ""))}, b"")
    return encode_message({":event-type": kind, ":content-type": "application/json", ":message-type": message_type},
                          orjson.dumps(payload))


def test_converse_stream_without_metadata_still_ends() -> None:
    from relaygate.formats.types import StreamEnd

    decoder = bedrock().stream_decoder()
    events = decoder.feed(_frame("messageStart", {"role": "assistant"})
                          + _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
                          + _frame("messageStop", {"stopReason": "max_tokens"}))
    events += decoder.close()
    assert isinstance(events[-1], StreamEnd) and events[-1].stop_reason == "max_tokens" and events[-1].usage is None


def test_event_stream_error_messages_are_upstream_errors() -> None:
    decoder = bedrock().stream_decoder()
    with pytest.raises(UpstreamError) as info:
        decoder.feed(_frame("messageStart", {"role": "assistant"})
                     + _frame("ServiceUnavailableException", {"message": "busy adapter-secret-1"}, "error"))
    assert info.value.status == 503 and "busy" in info.value.message and "adapter-secret-1" not in info.value.message
