"""The official OpenAI Python client against a running Wick server.

tests/clients.rs starts the server and runs this file with WICK_BASE_URL, WICK_API_KEY and WICK_MODEL set.
"""
import base64
import json
import math
import os
import struct

import openai
import pydantic
import pytest
from openai.types import completion_create_params, embedding_create_params
from openai.types.audio import speech_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types import responses as r_types
from openai.types.responses import response_create_params, response_input_param

BASE_URL = os.environ["WICK_BASE_URL"]
MODEL = os.environ["WICK_MODEL"]
EMBEDDING_MODEL = os.environ["WICK_EMBEDDING_MODEL"]
# sentence-transformers' vectors for the embedding model (made by tests/fixtures/make_embedding_fixture.py).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "minilm_embeddings.json")) as f:
    EMBEDDING_FIXTURE = json.load(f)
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
PROMPT = "The capital of France is"


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=os.environ["WICK_API_KEY"], max_retries=0)


def test_models_list(client):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids


def test_plain_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=32)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    assert r.usage.completion_tokens > 0


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=32, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob == t.top_logprobs[0].logprob <= 0 for t in content)
    assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in content)
    text = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=4, logprobs=3)
    lp = text.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == text.choices[0].text


class Capital(pydantic.BaseModel):
    country: str
    capital: str


def test_structured_output_parses_into_the_pydantic_model(client):
    # The client turns the model into a strict json_schema response_format and parses the answer.
    completion = client.beta.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        response_format=Capital,
        temperature=0,
        max_tokens=100,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Capital)
    assert parsed.capital == "Paris", completion.choices[0].message.content


def test_unenforceable_schema_is_a_bad_request_naming_it(client):
    schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        )
    assert e.value.param == "response_format.json_schema.schema"
    assert '"not"' in e.value.body["message"]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_loop_with_required_call(client):
    first = client.chat.completions.create(
        model=MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="required", temperature=0, max_tokens=100
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and set(arguments) <= {"city", "unit"}
    assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    # The result goes back in, and the model answers in text.
    history = WEATHER_QUESTION + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "cloudy"})},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER_TOOL], tool_choice="none", temperature=0, max_tokens=60
    )
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_streamed_tool_calls_add_up_to_the_plain_ones(client):
    ask = dict(model=MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], temperature=0, max_tokens=100)
    ask["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
    plain = client.chat.completions.create(**ask).choices[0]
    calls = {}
    finish = None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert finish == plain.finish_reason == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in plain.message.tool_calls
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_stop_is_not_emitted(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=32, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_n_two(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, n=2, seed=1, max_tokens=16)
    assert [c.index for c in r.choices] == [0, 1]


def test_text_completion(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=8, echo=True)
    assert r.object == "text_completion"
    assert r.model == MODEL
    assert r.id.startswith("cmpl-")
    choice = r.choices[0]
    assert choice.index == 0 and choice.logprobs is None
    # echo: the prompt, then SmolLM2's greedy continuation (" Paris.\n\nThe United States has").
    assert choice.text.startswith(PROMPT) and "Paris" in choice.text[len(PROMPT):]
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 8


def test_text_completion_stream_with_usage(client):
    plain = client.completions.create(model=MODEL, prompt=[PROMPT, PROMPT], temperature=0, max_tokens=8)
    stream = client.completions.create(
        model=MODEL, prompt=[PROMPT, PROMPT], temperature=0, max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    texts = ["", ""]
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in plain.choices]
    assert all("Paris" in t for t in texts)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == plain.usage.completion_tokens


def test_text_completion_refuses_suffix(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=PROMPT, suffix="and that is all.")
    assert e.value.param == "suffix"


def test_wrong_key_is_an_authentication_error():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL, messages=QUESTION)
    assert e.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert e.value.code == "model_not_found"


def test_bad_parameter_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)
    assert e.value.param == "temperature"


def test_speech_in_every_format(client):
    magic = {"mp3": None, "wav": b"RIFF", "flac": b"fLaC", "opus": b"OggS"}
    for fmt, head in magic.items():
        r = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from Wick.", response_format=fmt)
        audio = r.read()
        assert len(audio) > 1000, fmt
        if head:
            assert audio[:4] == head, fmt
    # The default format is OpenAI's: mp3 (an MPEG frame sync or an ID3 tag).
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.").read()
    assert audio[:3] == b"ID3" or (audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0)


def test_speech_streaming_response(client, tmp_path):
    out = tmp_path / "speech.pcm"
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input="One. Two. Three.", response_format="pcm"
    ) as r:
        r.stream_to_file(out)
    assert out.stat().st_size > 24_000  # over half a second of 24 kHz 16-bit audio


def test_speech_bad_voice_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert e.value.param == "voice"


# Every field the official client can send is either served or refused by name: none is unknown
# to the server (which would be refused as "Unrecognized request argument supplied") and none is
# silently ignored. Each field is sent with a value no field takes (an object with an unknown key),
# so a served field answers with a type error naming it (or, for an object field, the unknown key
# within it), and a refused one with its refusal.
PROBE = {"probe": [1]}


def _refusal(client, path, body):
    with pytest.raises(openai.BadRequestError) as e:
        client.post(path, body=body, cast_to=object)
    return e.value.param, e.value.body["message"]


def _every_field(params_type, required):
    return sorted(set(params_type.__annotations__) - set(required))


@pytest.mark.parametrize(
    "path, params_type, body",
    [
        (
            "/chat/completions",
            chat_create_params.CompletionCreateParamsBase,
            {"model": MODEL, "messages": QUESTION},
        ),
        ("/completions", completion_create_params.CompletionCreateParamsBase, {"model": MODEL, "prompt": PROMPT}),
        (
            "/audio/speech",
            speech_create_params.SpeechCreateParams,
            {"model": "tts-1", "voice": "alloy", "input": "Hi."},
        ),
        ("/embeddings", embedding_create_params.EmbeddingCreateParams, {"model": EMBEDDING_MODEL, "input": "Hi."}),
        ("/responses", response_create_params.ResponseCreateParamsBase, {"model": MODEL, "input": "Hi."}),
    ],
)
def test_every_field_of_the_client_is_known(client, path, params_type, body):
    fields = _every_field(params_type, body)
    if path in ("/chat/completions", "/completions", "/responses"):
        fields.append("stream")  # in the client's streaming and non-streaming subtypes, not the base
    assert len(fields) >= 3
    for field in fields:
        param, message = _refusal(client, path, {**body, field: PROBE})
        assert message != f"Unrecognized request argument supplied: {field}", message
        assert param == field or param.startswith(field + "."), (field, param, message)
    param, message = _refusal(client, path, {**body, "no_such_field": 1})
    assert message == "Unrecognized request argument supplied: no_such_field"


def test_every_field_of_every_message_is_known(client):
    kinds = {
        "system": openai.types.chat.ChatCompletionSystemMessageParam,
        "developer": openai.types.chat.ChatCompletionDeveloperMessageParam,
        "user": openai.types.chat.ChatCompletionUserMessageParam,
        "assistant": openai.types.chat.ChatCompletionAssistantMessageParam,
        "tool": openai.types.chat.ChatCompletionToolMessageParam,
    }
    for role, params_type in kinds.items():
        for field in _every_field(params_type, ["role", "content"]) + ["content"]:
            message = {"role": role, "content": "Hi.", field: PROBE}
            param, text = _refusal(client, "/chat/completions", {"model": MODEL, "messages": [message]})
            assert text != f"Unrecognized request argument supplied: messages[0].{field}", (role, text)
            assert param.startswith(f"messages[0].{field}"), (role, field, param, text)


CALL_ITEM = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
# Where a part of a Responses request goes, given the part.
RESPONSES_PLACES = {
    "input[0]": lambda part: {"input": [part]},
    "input[1]": lambda part: {"input": [CALL_ITEM, part]},
    "input[0].content[0]": lambda part: {"input": [{"role": "user", "content": [part]}]},
    "tools[0]": lambda part: {"tools": [part]},
    "text": lambda part: {"text": part},
    "text.format": lambda part: {"text": {"format": part}},
    "stream_options": lambda part: {"stream": True, "stream_options": part},
}


@pytest.mark.parametrize(
    "params_type, part, at",
    [
        (r_types.EasyInputMessageParam, {"role": "user", "content": "Hi."}, "input[0]"),
        (
            response_input_param.Message,
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
            "input[0]",
        ),
        (
            r_types.ResponseOutputMessageParam,
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hi.", "annotations": []}]},
            "input[0]",
        ),
        (r_types.ResponseFunctionToolCallParam, CALL_ITEM, "input[0]"),
        (
            response_input_param.FunctionCallOutput,
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            "input[1]",
        ),
        (r_types.ResponseInputTextParam, {"type": "input_text", "text": "Hi."}, "input[0].content[0]"),
        (r_types.ResponseOutputTextParam, {"type": "output_text", "text": "Hi.", "annotations": []}, "input[0].content[0]"),
        (
            r_types.FunctionToolParam,
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
            "tools[0]",
        ),
        (r_types.ResponseTextConfigParam, {}, "text"),
        (
            r_types.ResponseFormatTextJSONSchemaConfigParam,
            {"type": "json_schema", "name": "a", "schema": {"type": "object"}},
            "text.format",
        ),
        (response_create_params.StreamOptions, {}, "stream_options"),
    ],
)
def test_every_field_of_every_part_of_a_responses_request_is_known(client, params_type, part, at):
    fields = _every_field(params_type, part)
    assert fields
    for field in fields:
        body = {"model": MODEL, "input": "Hi.", **RESPONSES_PLACES[at]({**part, field: PROBE})}
        param, message = _refusal(client, "/responses", body)
        assert message != f"Unrecognized request argument supplied: {at}.{field}", message
        assert param.startswith(f"{at}.{field}"), (at, field, param, message)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_string_matches_sentence_transformers(client):
    first = EMBEDDING_FIXTURE["inputs"][0]
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=first["text"])
    assert r.object == "list" and r.model == EMBEDDING_MODEL
    assert [d.index for d in r.data] == [0]
    vector = r.data[0].embedding
    assert len(vector) == EMBEDDING_FIXTURE["dimensions"]
    assert abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-5
    assert cosine(vector, first["embedding"]) >= 0.9999
    assert r.usage.prompt_tokens == r.usage.total_tokens == first["tokens"]


def test_embeddings_list(client):
    inputs = EMBEDDING_FIXTURE["inputs"]
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=[i["text"] for i in inputs])
    assert [d.index for d in r.data] == list(range(len(inputs)))
    for d, i in zip(r.data, inputs):
        assert cosine(d.embedding, i["embedding"]) >= 0.9999, i["text"][:40]
    assert r.usage.prompt_tokens == sum(i["tokens"] for i in inputs)


def test_embeddings_base64_decodes_to_the_floats(client):
    text = "What is the capital of France?"
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float").data[0].embedding
    # Asked for explicitly, the client hands the base64 string over as it came.
    encoded = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="base64").data[0].embedding
    raw = base64.b64decode(encoded)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(floats)
    assert max(abs(a - b) for a, b in zip(decoded, floats)) < 1e-7
    # Unasked, the client requests base64 and decodes it itself.
    default = client.embeddings.create(model=EMBEDDING_MODEL, input=text).data[0].embedding
    assert max(abs(a - b) for a, b in zip(default, floats)) < 1e-7


def test_embeddings_dimensions_is_refused_unless_the_models_own(client):
    dims = EMBEDDING_FIXTURE["dimensions"]
    assert len(client.embeddings.create(model=EMBEDDING_MODEL, input="a", dimensions=dims).data[0].embedding) == dims
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_MODEL, input="a", dimensions=128)
    assert e.value.param == "dimensions"


def test_embeddings_over_the_limit_is_refused_not_cut(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_MODEL, input=EMBEDDING_FIXTURE["over_limit"])
    assert e.value.code == "context_length_exceeded"


def test_responses_plain(client):
    r = client.responses.create(
        model=MODEL, input="What is the capital of France? Answer in one word.", temperature=0, max_output_tokens=32
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.model == MODEL
    assert r.status == "completed"
    assert "Paris" in r.output_text
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens > 0 and r.usage.input_tokens_details.cached_tokens >= 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_instructions_and_the_token_limit(client):
    r = client.responses.create(
        model=MODEL,
        instructions="You are a geography teacher.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Tell me about Paris."}]}],
        temperature=0,
        max_output_tokens=5,
    )
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.instructions == "You are a geography teacher."
    assert r.usage.output_tokens == 5 and r.output_text


def test_responses_stream(client):
    stream = client.responses.create(
        model=MODEL, input="What is the capital of France? Answer in one word.", temperature=0, max_output_tokens=32,
        stream=True,
    )
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Paris" in deltas
    done = [e for e in events if e.type == "response.output_text.done"]
    assert [d.text for d in done] == [deltas]
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.output_text == deltas
    assert last.response.usage.output_tokens > 0


WEATHER_FUNCTION = {"type": "function", **WEATHER_TOOL["function"], "strict": True}


def test_responses_tool_loop_with_required_call(client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model=MODEL, input=question, tools=[WEATHER_FUNCTION], tool_choice="required", temperature=0,
        max_output_tokens=100,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) >= 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["city"], str) and set(arguments) <= {"city", "unit"}
    # The output items go back in as they came, with the call's result; the model answers in text.
    history = question + [item.model_dump(exclude_none=True) for item in first.output] + [
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temperature_c": 18})}
    ]
    second = client.responses.create(
        model=MODEL, input=history, tools=[WEATHER_FUNCTION], tool_choice="none", temperature=0, max_output_tokens=60
    )
    assert second.output_text and not [item for item in second.output if item.type == "function_call"]
    # The call and its result are in the prompt.
    alone = client.responses.create(
        model=MODEL, input=question, tools=[WEATHER_FUNCTION], tool_choice="none", max_output_tokens=1
    )
    assert second.usage.input_tokens > alone.usage.input_tokens + 20


def test_responses_parse_into_the_pydantic_model(client):
    # The client turns the model into a strict json_schema text.format and parses the answer.
    r = client.responses.parse(
        model=MODEL,
        input="What is the capital of France? Answer in JSON.",
        text_format=Capital,
        temperature=0,
        max_output_tokens=100,
    )
    assert isinstance(r.output_parsed, Capital)
    assert r.output_parsed.capital == "Paris", r.output_text
    assert r.text.format.type == "json_schema"


def test_responses_refuse_what_they_cannot_serve(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", previous_response_id="resp_123")
    assert e.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", tools=[{"type": "web_search"}])
    assert e.value.param == "tools[0].type"
