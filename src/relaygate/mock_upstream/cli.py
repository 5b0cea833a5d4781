"""`relaygate mock-upstream`: serves the fake provider endpoints with injected faults."""

from __future__ import annotations

from dataclasses import asdict

import orjson
import typer

from relaygate.mock_upstream.faults import FaultConfig
from relaygate.mock_upstream.server import run_mock_upstream


def _codes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated HTTP statuses, got {text!r}") from None


def mock_upstream_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8090, "--port", help="Port to listen on."),
    latency_ms: int = typer.Option(0, "--latency-ms", help="Delay before every answer's first byte."),
    fail_rate: float = typer.Option(0.0, "--fail-rate", help="Probability a request fails."),
    fail_codes: str = typer.Option("429,503", "--fail-codes", help="Statuses drawn for failures."),
    stream_chunk_ms: int = typer.Option(0, "--stream-chunk-ms", help="Pause between stream chunks."),
    cut_stream_rate: float = typer.Option(
        0.0, "--cut-stream-rate", help="Probability a stream is cut before its end."
    ),
    hang_rate: float = typer.Option(0.0, "--hang-rate", help="Probability a request never answers."),
    seed: int | None = typer.Option(None, "--seed", help="RNG seed for reproducible faults."),
    retry_after_s: int = typer.Option(1, "--retry-after-s", help="retry-after sent with 429/529."),
    cache_min_tokens: int = typer.Option(
        0, "--cache-min-tokens", help="Shortest prompt prefix the prompt-cache simulation caches."
    ),
    as_json: bool = typer.Option(False, "--json", help="Announce the bound URL as one JSON line."),
) -> None:
    """Fake OpenAI / Anthropic / Bedrock / Gemini / Azure upstream with fault injection.

    Model names pick a fault per request: fail-<code>, hang, slow-<ms>, cut-<k>, stall-<k>,
    error-<k>, reply-<text>.
    """
    try:
        config = FaultConfig(
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            fail_codes=_codes(fail_codes),
            stream_chunk_ms=stream_chunk_ms,
            cut_stream_rate=cut_stream_rate,
            hang_rate=hang_rate,
            seed=seed,
            retry_after_s=retry_after_s,
            cache_min_tokens=cache_min_tokens,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def announce(url: str) -> None:
        if as_json:
            typer.echo(orjson.dumps({"url": url, "faults": asdict(config)}).decode())
        else:
            typer.echo(f"mock upstream listening on {url}", err=True)

    run_mock_upstream(host, port, on_ready=announce, **asdict(config))


if __name__ == "__main__":
    typer.run(mock_upstream_command)
