// The Anthropic SDK against the gateway's /v1/messages: non-streamed and
// streamed messages (the SDK's MessageStream and the raw events), tool use
// round trips, and typed errors. Messages to an OpenAI-served model are
// translated both ways by the gateway.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { anthropic, collect, rejectsWith, hasKey, anthropicWeatherTool } from './helpers.mjs';

// Models served natively (Anthropic upstream) and through translation
// (OpenAI upstream).
const MODELS = ['claude-3-5-sonnet', 'gpt-4o', 'fast-fallback'];

for (const model of MODELS) {
  describe(`messages on ${model}`, () => {
    test('messages.create, not streamed', async () => {
      const msg = await anthropic().messages.create({
        model,
        max_tokens: 128,
        system: 'e2e-anthropic-system: be brief',
        messages: [{ role: 'user', content: 'hello there' }],
      });
      assert.equal(msg.type, 'message');
      assert.equal(msg.role, 'assistant');
      assert.equal(msg.content.length, 1);
      assert.equal(msg.content[0].type, 'text');
      assert.match(msg.content[0].text, /reply to: hello there/);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0, JSON.stringify(msg.usage));
    });

    test('messages.stream() and finalMessage()', async () => {
      const stream = anthropic().messages.stream({
        model,
        max_tokens: 128,
        messages: [{ role: 'user', content: [{ type: 'text', text: 'stream please' }] }],
      });
      const deltas = [];
      stream.on('text', (t) => deltas.push(t));
      const msg = await stream.finalMessage();
      assert.ok(deltas.length > 1, `expected several text deltas, got ${deltas.length}`);
      assert.equal(msg.content[0].type, 'text');
      assert.equal(msg.content[0].text, deltas.join(''));
      assert.match(msg.content[0].text, /reply to: stream please w1 w2 w3 w4/);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.ok(msg.usage.output_tokens > 0, JSON.stringify(msg.usage));
    });

    test('raw stream events are in protocol order', async () => {
      const stream = await anthropic().messages.create({
        model,
        max_tokens: 128,
        messages: [{ role: 'user', content: 'raw events' }],
        stream: true,
      });
      const events = await collect(stream);
      const types = events.map((e) => e.type);
      assert.equal(types[0], 'message_start', types.join(','));
      assert.equal(types.at(-1), 'message_stop', types.join(','));
      const start = types.indexOf('content_block_start');
      const stop = types.indexOf('content_block_stop');
      const delta = types.indexOf('message_delta');
      assert.ok(start > 0 && stop > start && delta > stop, `block start < block stop < message_delta: ${types.join(',')}`);
      assert.ok(types.filter((t) => t === 'content_block_delta').length > 1, 'several content_block_delta events');
      assert.equal(events[0].message.role, 'assistant');
      assert.equal(events[delta].delta.stop_reason, 'end_turn');
    });

    test('tool_use round trip', async () => {
      const client = anthropic();
      const messages = [{ role: 'user', content: 'weather in Paris?' }];
      const first = await client.messages.create({
        model,
        max_tokens: 128,
        tools: [anthropicWeatherTool],
        tool_choice: { type: 'tool', name: 'get_weather' },
        messages,
      });
      assert.equal(first.stop_reason, 'tool_use');
      const use = first.content.find((b) => b.type === 'tool_use');
      assert.ok(use, `tool_use block in ${JSON.stringify(first.content)}`);
      assert.ok(use.id, 'tool_use id');
      assert.equal(use.name, 'get_weather');
      assert.deepEqual(use.input, { location: 'Paris' });

      messages.push({ role: 'assistant', content: first.content });
      messages.push({
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: use.id, content: '{"temp_c":21}' },
          { type: 'text', text: 'thanks, summarise' },
        ],
      });
      const second = await client.messages.create({
        model,
        max_tokens: 128,
        tools: [anthropicWeatherTool],
        tool_choice: { type: 'none' },
        messages,
      });
      assert.equal(second.stop_reason, 'end_turn');
      assert.equal(second.content[0].type, 'text');
      assert.match(second.content[0].text, /thanks, summarise/);
    });

    test('tool_use, streamed', async () => {
      const stream = anthropic().messages.stream({
        model,
        max_tokens: 128,
        tools: [anthropicWeatherTool],
        messages: [{ role: 'user', content: 'weather in Paris?' }],
      });
      const msg = await stream.finalMessage();
      assert.equal(msg.stop_reason, 'tool_use');
      const use = msg.content.find((b) => b.type === 'tool_use');
      assert.ok(use, `tool_use block in ${JSON.stringify(msg.content)}`);
      assert.equal(use.name, 'get_weather');
      assert.deepEqual(use.input, { location: 'Paris' });
    });
  });
}

test('claude-slow-stream: events are relayed as they arrive', async () => {
  const stream = anthropic().messages.stream({ model: 'claude-slow-stream', max_tokens: 64, messages: [{ role: 'user', content: 'slow' }] });
  const times = [];
  stream.on('text', () => times.push(performance.now()));
  await stream.finalMessage();
  assert.equal(times.length, 6, `six text deltas, got ${times.length}`);
  const spread = times.at(-1) - times[0];
  assert.ok(spread >= 500, `text deltas arrived within ${spread.toFixed(0)} ms of each other; the upstream spread them over 750 ms`);
});

test('beta.messages.create forwards anthropic-beta to Anthropic', async () => {
  // The SDK calls /v1/messages?beta=true with the anthropic-beta header; the
  // harness checks the header reached the upstream.
  const msg = await anthropic().beta.messages.create({
    model: 'claude-3-5-sonnet',
    max_tokens: 16,
    betas: ['e2e-beta-2025-01-01'],
    messages: [{ role: 'user', content: 'beta-marker' }],
  });
  assert.match(msg.content[0].text, /beta-marker/);
});

test('non-ASCII text and JSON escapes survive both ways', async () => {
  const text = 'héllo 🌍 世界 "quoted" \\ back\nslash \u2028';
  for (const model of ['claude-3-5-sonnet', 'gpt-4o']) {
    const msg = await anthropic().messages.create({ model, max_tokens: 16, messages: [{ role: 'user', content: text }] });
    assert.ok(msg.content[0].text.endsWith(text), `${model}: ${JSON.stringify(msg.content[0].text)}`);
    const streamed = await anthropic().messages.stream({ model, max_tokens: 16, messages: [{ role: 'user', content: text }] }).finalText();
    assert.ok(streamed.includes(text), `${model} streamed: ${JSON.stringify(streamed)}`);
  }
});

describe('parameters', () => {
  // The harness checks upstream how these were translated to OpenAI (stop,
  // user, max_tokens; top_k has no OpenAI equivalent and must be dropped).
  test('sampling parameters to an OpenAI deployment', async () => {
    const msg = await anthropic().messages.create({
      model: 'gpt-4o',
      max_tokens: 55,
      temperature: 0.4,
      top_k: 5,
      stop_sequences: ['STOP'],
      metadata: { user_id: 'e2e-anthropic-user' },
      messages: [{ role: 'user', content: 'params-marker-anthropic' }],
    });
    assert.match(msg.content[0].text, /params-marker-anthropic/);
  });
});

describe('anthropic errors', () => {
  test('unknown model is NotFoundError (404) with an Anthropic error body', async () => {
    const err = await rejectsWith(
      assert,
      anthropic().messages.create({ model: 'no-such-model', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.NotFoundError,
      404,
    );
    assert.equal(err.error?.type, 'error', JSON.stringify(err.error));
    assert.equal(err.error?.error?.type, 'not_found_error', JSON.stringify(err.error));
  });

  test('unknown model, streamed, is NotFoundError (404)', async () => {
    await rejectsWith(
      assert,
      anthropic().messages.stream({ model: 'no-such-model', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }).finalMessage(),
      Anthropic.NotFoundError,
      404,
    );
  });

  test('malformed request is BadRequestError (400)', async () => {
    const err = await rejectsWith(
      assert,
      anthropic().messages.create({ model: 'claude-3-5-sonnet', max_tokens: 16, messages: 'not an array' }),
      Anthropic.BadRequestError,
      400,
    );
    assert.equal(err.error?.error?.type, 'invalid_request_error', JSON.stringify(err.error));
  });

  test('invalid key is AuthenticationError (401)', { skip: !hasKey && 'no master key configured' }, async () => {
    const err = await rejectsWith(
      assert,
      anthropic({ apiKey: 'sk-ant-wrong' }).messages.create({ model: 'claude-3-5-sonnet', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.AuthenticationError,
      401,
    );
    assert.equal(err.error?.error?.type, 'authentication_error', JSON.stringify(err.error));
  });

  test('missing key is AuthenticationError (401)', { skip: !hasKey && 'no master key configured' }, async () => {
    const client = anthropic({ defaultHeaders: { 'X-Api-Key': null } });
    await rejectsWith(
      assert,
      client.messages.create({ model: 'claude-3-5-sonnet', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.AuthenticationError,
      401,
    );
  });

  test('upstream 529 (overloaded) keeps its status and Anthropic error type', async () => {
    const err = await rejectsWith(
      assert,
      anthropic().messages.create({ model: 'claude-broken', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.InternalServerError,
      529,
    );
    assert.equal(err.error?.error?.type, 'overloaded_error', JSON.stringify(err.error));
  });

  test('upstream 529, streamed, is an APIError before any event', async () => {
    await rejectsWith(
      assert,
      anthropic().messages.stream({ model: 'claude-broken', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }).finalMessage(),
      Anthropic.InternalServerError,
      529,
    );
  });

  for (const model of ['claude-cut', 'broken-cut']) {
    test(`${model}: a stream cut by the upstream raises instead of ending cleanly`, async () => {
      const stream = await anthropic().messages.create({
        model,
        max_tokens: 16,
        messages: [{ role: 'user', content: 'cut' }],
        stream: true,
      });
      const types = [];
      let err;
      try {
        for await (const ev of stream) types.push(ev.type);
      } catch (e) {
        err = e;
      }
      assert.equal(types[0], 'message_start');
      assert.ok(!types.includes('message_stop'), `no message_stop after a cut: ${types.join(',')}`);
      assert.ok(err instanceof Anthropic.APIError, `expected an APIError mid-stream, got ${err?.constructor?.name}: ${err?.message}`);
      assert.match(err.message, /ended before completion/);
    });
  }

  test('upstream 429 from an OpenAI deployment is RateLimitError', async () => {
    const err = await rejectsWith(
      assert,
      anthropic().messages.create({ model: 'broken-429', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.RateLimitError,
      429,
    );
    assert.equal(err.error?.error?.type, 'rate_limit_error', JSON.stringify(err.error));
  });
});
