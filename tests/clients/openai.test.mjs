// The official OpenAI Node client against a running Wick server.
// tests/clients.rs starts the server and runs `node --test` on this file with WICK_BASE_URL,
// WICK_API_KEY and WICK_MODEL set.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.WICK_BASE_URL;
const model = process.env.WICK_MODEL;
const embeddingModel = process.env.WICK_EMBEDDING_MODEL;
const client = new OpenAI({ baseURL, apiKey: process.env.WICK_API_KEY, maxRetries: 0 });
const messages = [{ role: "user", content: "What is the capital of France? Answer in one word." }];
const prompt = "The capital of France is";

test("models list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), ids.join(","));
});

test("plain completion", async () => {
  const r = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 32 });
  assert.equal(r.object, "chat.completion");
  assert.match(r.choices[0].message.content, /Paris/);
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.prompt_tokens_details.cached_tokens >= 0);
});

test("stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages, temperature: 0, max_tokens: 32, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? "").join("");
  assert.match(text, /Paris/);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens > 0);
});

test("stop is not emitted", async () => {
  const r = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 32, stop: ["Paris"] });
  assert.ok(!r.choices[0].message.content.includes("Paris"), r.choices[0].message.content);
  assert.equal(r.choices[0].finish_reason, "stop");
});

test("n = 2", async () => {
  const r = await client.chat.completions.create({ model, messages, n: 2, seed: 1, max_tokens: 16 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
});

test("text completion", async () => {
  const r = await client.completions.create({ model, prompt, temperature: 0, max_tokens: 8, echo: true });
  assert.equal(r.object, "text_completion");
  assert.equal(r.model, model);
  assert.equal(r.choices[0].index, 0);
  // echo: the prompt, then SmolLM2's greedy continuation (" Paris.\n\nThe United States has").
  assert.ok(r.choices[0].text.startsWith(prompt), r.choices[0].text);
  assert.match(r.choices[0].text.slice(prompt.length), /Paris/);
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("text completion stream with usage", async () => {
  const plain = await client.completions.create({ model, prompt: [prompt, prompt], temperature: 0, max_tokens: 8 });
  const stream = await client.completions.create({
    model, prompt: [prompt, prompt], temperature: 0, max_tokens: 8, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.every((c) => c.object === "text_completion"));
  const texts = ["", ""];
  for (const c of chunks) for (const choice of c.choices) texts[choice.index] += choice.text;
  assert.deepEqual(texts, plain.choices.map((c) => c.text));
  assert.ok(texts.every((t) => t.includes("Paris")), texts.join("|"));
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, plain.usage.completion_tokens);
});

test("text completion: best_of raises BadRequestError naming it", async () => {
  await assert.rejects(client.completions.create({ model, prompt, best_of: 3 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, "best_of");
    return true;
  });
});

test("wrong key raises AuthenticationError", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model, messages }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.code, "invalid_api_key");
    return true;
  });
});

test("unknown model raises NotFoundError", async () => {
  await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.code, "model_not_found");
    return true;
  });
});

test("speech: wav, and mp3 by default", async () => {
  const wav = Buffer.from(
    await (await client.audio.speech.create({ model: "tts-1", voice: "alloy", input: "Hello from Wick.", response_format: "wav" })).arrayBuffer(),
  );
  assert.equal(wav.subarray(0, 4).toString(), "RIFF");
  assert.ok(wav.length > 10000);
  const mp3 = Buffer.from(await (await client.audio.speech.create({ model: "tts-1", voice: "alloy", input: "Hello." })).arrayBuffer());
  assert.ok(mp3.subarray(0, 3).toString() === "ID3" || (mp3[0] === 0xff && (mp3[1] & 0xe0) === 0xe0));
});

test("speech: bad speed raises BadRequestError", async () => {
  await assert.rejects(client.audio.speech.create({ model: "tts-1", voice: "alloy", input: "Hi.", speed: 9 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, "speed");
    return true;
  });
});

test("embeddings: a list of strings", async () => {
  // The client asks for base64 and decodes it to floats itself.
  const r = await client.embeddings.create({ model: embeddingModel, input: ["hello", "Bonjour, le monde !"] });
  assert.equal(r.object, "list");
  assert.equal(r.model, embeddingModel);
  assert.deepEqual(r.data.map((d) => d.index), [0, 1]);
  for (const d of r.data) {
    assert.equal(d.embedding.length, 384);
    const norm = Math.sqrt(d.embedding.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-5, String(norm));
  }
  assert.equal(r.usage.prompt_tokens, r.usage.total_tokens);
  assert.ok(r.usage.prompt_tokens >= 6);
});

test("tool call with tool_choice required, and its result answered", async () => {
  const tools = [{
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
    },
  }];
  const question = [{ role: "user", content: "What is the weather in Paris?" }];
  const r = await client.chat.completions.create({ model, messages: question, tools, tool_choice: "required", temperature: 0, max_tokens: 100 });
  const choice = r.choices[0];
  assert.equal(choice.finish_reason, "tool_calls");
  const call = choice.message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments).city, "string");
  const answer = await client.chat.completions.create({
    model,
    messages: [...question, choice.message, { role: "tool", tool_call_id: call.id, content: "18 C and cloudy" }],
    temperature: 0,
    max_tokens: 40,
  });
  assert.ok(answer.choices[0].message.content.length > 0);
});

test("responses: plain and streamed", async () => {
  const input = "What is the capital of France? Answer in one word.";
  const r = await client.responses.create({ model, input, temperature: 0, max_output_tokens: 32 });
  assert.equal(r.object, "response");
  assert.equal(r.status, "completed");
  assert.match(r.output_text, /Paris/);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  const stream = await client.responses.create({ model, input, temperature: 0, max_output_tokens: 32, stream: true });
  const events = [];
  for await (const e of stream) events.push(e);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  const text = events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
  const last = events[events.length - 1];
  assert.equal(last.type, "response.completed");
  assert.equal(text, r.output_text);
  assert.equal(last.response.output[0].content[0].text, text);
});
