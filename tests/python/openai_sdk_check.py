"""Drives a Switchboard agent runtime with the official `openai` Python SDK.

Environment: SWITCHBOARD_BASE_URL (e.g. http://127.0.0.1:8080/v1),
SWITCHBOARD_API_KEY, optional SWITCHBOARD_USER (default "sdk-user").
Checks: models list, a non-streamed chat, a streamed chat with usage, a
multi-turn conversation, and that the sessions API stored each message once;
client-side tools (a call, whole and streamed, and its result sent back),
structured output accepted, and an unsupported field refused by name.
Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys
import urllib.request

from openai import OpenAI

BASE_URL = os.environ["SWITCHBOARD_BASE_URL"]
API_KEY = os.environ["SWITCHBOARD_API_KEY"]
USER = os.environ.get("SWITCHBOARD_USER", "sdk-user")

client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)
passed = 0


def check(name, condition, detail=""):
    global passed
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}", flush=True)


def sessions_api(path):
    root = BASE_URL.rsplit("/v1", 1)[0]
    request = urllib.request.Request(
        root + path,
        headers={"Authorization": f"Bearer {API_KEY}", "x-switchboard-user": USER},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


models = client.models.list()
ids = [m.id for m in models.data]
check("models.list returns the agent", len(ids) == 1, ids)
model = ids[0]

reply = client.chat.completions.create(
    model=model, user=USER, messages=[{"role": "user", "content": "hello from the sdk"}]
)
check(
    "non-streamed chat",
    reply.choices[0].message.content == "Echo: hello from the sdk",
    reply.choices[0].message.content,
)
check("usage reported", reply.usage is not None and reply.usage.total_tokens > 0, reply.usage)

pieces = []
usage = None
finish = None
stream = client.chat.completions.create(
    model=model,
    user=USER,
    stream=True,
    stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "stream from the sdk"}],
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
check("streamed chat text", "".join(pieces) == "Echo: stream from the sdk", "".join(pieces))
check("streamed chat finish and usage", finish == "stop" and usage and usage.completion_tokens > 0, (finish, usage))

history = [{"role": "user", "content": "multi turn start"}]
for turn in range(3):
    answer = client.chat.completions.create(model=model, user=USER, messages=history)
    history.append({"role": "assistant", "content": answer.choices[0].message.content})
    history.append({"role": "user", "content": f"multi turn {turn}"})
final = client.chat.completions.create(model=model, user=USER, messages=history)
check("multi-turn answer", final.choices[0].message.content == "Echo: multi turn 2", final.choices[0].message.content)

sessions = sessions_api("/api/sessions?limit=100")
multi = [s for s in sessions["data"] if s["title"] == "multi turn start"]
check("multi-turn is one session", len(multi) == 1, sessions)
check("each message stored once", multi[0]["message_count"] == 8, multi[0])
messages = sessions_api(f"/api/sessions/{multi[0]['id']}/messages?limit=100")["data"]
contents = [m["content"] for m in messages]
check("stored in order", contents[0] == "multi turn start" and contents[-1] == "Echo: multi turn 2", contents)

try:
    client.chat.completions.create(model=model, messages=[])
    check("empty messages refused", False, "no error raised")
except Exception as error:  # openai.BadRequestError
    check("empty messages refused", getattr(error, "status_code", None) == 400, repr(error))

tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
question = {"role": "user", "content": "weather in Lyon"}
called = client.chat.completions.create(model=model, user=USER, messages=[question], tools=tools, tool_choice="auto")
choice = called.choices[0]
check(
    "tool call answered",
    choice.finish_reason == "tool_calls"
    and choice.message.tool_calls
    and choice.message.tool_calls[0].function.name == "get_weather"
    and json.loads(choice.message.tool_calls[0].function.arguments) == {"text": "weather in Lyon"},
    choice,
)
call = choice.message.tool_calls[0]
result = client.chat.completions.create(
    model=model,
    user=USER,
    tools=tools,
    messages=[
        question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Rain, 12 C"},
    ],
)
check("tool result answered", result.choices[0].message.content == "Tool results: Rain, 12 C", result.choices[0])
sessions = sessions_api("/api/sessions?limit=100")
lyon = [s for s in sessions["data"] if s["title"] == "weather in Lyon"]
check("tool round trip is one session", len(lyon) == 1, sessions)
stored = sessions_api(f"/api/sessions/{lyon[0]['id']}/messages?limit=100")["data"]
check(
    "stored history keeps the call and its result",
    [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    and stored[1]["tool_calls"][0]["id"] == call.id
    and stored[2]["tool_call_id"] == call.id,
    stored,
)

calls = {}
finish = None
stream = client.chat.completions.create(
    model=model, user=USER, stream=True, tools=tools, messages=[{"role": "user", "content": "weather in Nice"}]
)
for chunk in stream:
    for choice in chunk.choices:
        for piece in choice.delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            if piece.id:
                entry["id"] = piece.id
            if piece.function and piece.function.name:
                entry["name"] += piece.function.name
            if piece.function and piece.function.arguments:
                entry["arguments"] += piece.function.arguments
        if choice.finish_reason:
            finish = choice.finish_reason
check(
    "streamed tool call",
    finish == "tool_calls"
    and calls.get(0, {}).get("name") == "get_weather"
    and calls[0]["id"]
    and json.loads(calls[0]["arguments"]) == {"text": "weather in Nice"},
    (finish, calls),
)

structured = client.chat.completions.create(
    model=model,
    user=USER,
    messages=[{"role": "user", "content": "json please"}],
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
    },
    seed=1,
    top_p=0.5,
    stop=["END"],
)
check("structured output accepted", structured.choices[0].message.content == "Echo: json please", structured)

try:
    client.chat.completions.create(model=model, messages=[question], logprobs=True)
    check("unsupported field refused", False, "no error raised")
except Exception as error:  # openai.BadRequestError
    check(
        "unsupported field refused",
        getattr(error, "status_code", None) == 400 and getattr(error, "param", None) == "logprobs",
        repr(error),
    )

print(f"{passed} passed, 0 failed")
