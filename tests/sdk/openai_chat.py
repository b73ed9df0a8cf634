"""The official OpenAI Python SDK against a Sluice proxy: one whole chat completion and one
stream, over TLS trusting the given CA, HTTP/2 or HTTP/1.1 as asked. Prints one JSON line.

    openai_chat.py BASE_URL API_KEY CA_FILE MODEL h2|http1
"""

import json
import ssl
import sys

import httpx
from openai import OpenAI


def main() -> None:
    base_url, api_key, ca_file, model, protocol = sys.argv[1:6]
    trust = ssl.create_default_context(cafile=ca_file)
    http = httpx.Client(http2=protocol == "h2", verify=trust, timeout=20)
    client = OpenAI(base_url=base_url, api_key=api_key, http_client=http, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    completion = raw.parse()

    streamed, stream_usage = "", None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            streamed += chunk.choices[0].delta.content or ""
        if chunk.usage:
            stream_usage = chunk.usage.total_tokens

    print(
        json.dumps(
            {
                "http_version": raw.http_response.http_version,
                "content": completion.choices[0].message.content,
                "total_tokens": completion.usage.total_tokens,
                "streamed": streamed,
                "stream_usage": stream_usage,
                "overhead_us": raw.headers.get("x-sluice-overhead-us"),
            }
        )
    )


if __name__ == "__main__":
    main()
