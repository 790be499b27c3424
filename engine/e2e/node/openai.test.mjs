// The OpenAI SDK against the gateway: chat (streamed and not, with and
// without usage), tools, embeddings, models, legacy completions and the
// typed errors the SDK raises from the gateway's status codes.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { openai, collect, rejectsWith, hasKey, weatherTool } from './helpers.mjs';

// assemble joins a streamed chat completion: content, tool calls by index,
// finish reason, and the usage chunk if any.
function assemble(chunks) {
  let content = '';
  let finish = null;
  let usage = null;
  const calls = [];
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      content += ch.delta?.content ?? '';
      finish = ch.finish_reason ?? finish;
      for (const tc of ch.delta?.tool_calls ?? []) {
        const cur = (calls[tc.index] ??= { id: '', name: '', arguments: '' });
        if (tc.id) cur.id = tc.id;
        if (tc.function?.name) cur.name += tc.function.name;
        if (tc.function?.arguments) cur.arguments += tc.function.arguments;
      }
    }
  }
  return { content, finish, usage, calls };
}

// usageOnly are the chunks that carry usage and no choices (the final chunk
// of stream_options.include_usage).
const usageOnly = (chunks) => chunks.filter((c) => c.choices.length === 0);

describe('chat completions', () => {
  test('not streamed', async () => {
    const res = await openai().chat.completions.create({
      model: 'gpt-4o',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'say hi' },
      ],
      temperature: 0.2,
    });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(res.choices[0].message.content, 'upstream /v1/chat/completions reply to: say hi');
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.deepEqual(res.usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
  });

  test('withResponse exposes the gateway headers', async () => {
    const { data, response } = await openai()
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'headers' }] })
      .withResponse();
    assert.equal(response.status, 200);
    assert.ok(response.headers.get('x-request-id'), 'x-request-id header');
    assert.match(data.choices[0].message.content, /headers/);
  });

  for (const model of ['gpt-4o', 'claude-3-5-sonnet', 'fast-fallback']) {
    test(`${model}: streamed, content assembled over several chunks`, async () => {
      const stream = await openai().chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'count' }],
        stream: true,
      });
      const chunks = await collect(stream);
      assert.ok(chunks.length > 1, `expected more than one chunk, got ${chunks.length}`);
      const { content, finish, usage } = assemble(chunks);
      assert.match(content, /reply to: count/);
      assert.match(content, /w1 w2 w3 w4/, `all upstream chunks arrive in order: ${JSON.stringify(content)}`);
      assert.equal(finish, 'stop');
      assert.equal(usage, null, 'no usage without stream_options.include_usage');
      assert.deepEqual(usageOnly(chunks), [], 'no chunk with empty choices reaches a client that did not ask for usage');
    });

    test(`${model}: streamed with stream_options.include_usage`, async () => {
      const stream = await openai().chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'count with usage' }],
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = await collect(stream);
      const { content, usage } = assemble(chunks);
      assert.match(content, /reply to: count with usage/);
      const u = usageOnly(chunks);
      assert.equal(u.length, 1, `exactly one usage chunk: ${JSON.stringify(u)}`);
      assert.equal(chunks.at(-1), u[0], 'the usage chunk is the last one');
      assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0, JSON.stringify(usage));
      assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    });
  }
});

describe('payloads', () => {
  test('non-ASCII text and JSON escapes survive, streamed and not', async () => {
    const text = 'héllo 🌍 世界 "quoted" \\ back\nslash \u2028';
    for (const model of ['gpt-4o', 'claude-3-5-sonnet', 'fast-fallback']) {
      const res = await openai().chat.completions.create({ model, messages: [{ role: 'user', content: text }] });
      assert.ok(res.choices[0].message.content.endsWith(text), `${model}: ${JSON.stringify(res.choices[0].message.content)}`);
      const stream = await openai().chat.completions.create({ model, messages: [{ role: 'user', content: text }], stream: true });
      let got = '';
      for await (const c of stream) got += c.choices[0]?.delta?.content ?? '';
      assert.ok(got.includes(text), `${model} streamed: ${JSON.stringify(got)}`);
    }
  });

  test('a 2 MB prompt', async () => {
    const big = 'x'.repeat(2_000_000);
    for (const model of ['gpt-4o', 'claude-3-5-sonnet']) {
      const res = await openai().chat.completions.create({ model, messages: [{ role: 'user', content: big }] });
      assert.ok(res.choices[0].message.content.endsWith(big), `${model}: reply of ${res.choices[0].message.content.length} chars`);
    }
  });

  test('concurrent requests on one client', async () => {
    const client = openai();
    const models = ['gpt-4o', 'claude-3-5-sonnet', 'fast-fallback'];
    const jobs = [];
    for (let i = 0; i < 30; i++) {
      const model = models[i % models.length];
      const content = `concurrent ${i}`;
      if (i % 2 === 0) {
        jobs.push(
          client.chat.completions.create({ model, messages: [{ role: 'user', content }] }).then((r) => {
            assert.match(r.choices[0].message.content, new RegExp(`${content}$`));
          }),
        );
      } else {
        jobs.push(
          client.chat.completions.create({ model, messages: [{ role: 'user', content }], stream: true }).then(async (s) => {
            let got = '';
            for await (const c of s) got += c.choices[0]?.delta?.content ?? '';
            assert.match(got, new RegExp(`${content} w1`));
          }),
        );
      }
    }
    await Promise.all(jobs);
  });
});

describe('tools', () => {
  for (const model of ['gpt-4o', 'claude-3-5-sonnet']) {
    test(`${model}: tool_calls, not streamed`, async () => {
      const res = await openai().chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'weather in Paris?' }],
        tools: [weatherTool],
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.tool_calls.length, 1);
      const call = choice.message.tool_calls[0];
      assert.equal(call.type, 'function');
      assert.ok(call.id, 'tool call id');
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris' });
    });

    test(`${model}: tool_calls, streamed`, async () => {
      const stream = await openai().chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'weather in Paris?' }],
        tools: [weatherTool],
        tool_choice: 'auto',
        stream: true,
      });
      const { calls, finish } = assemble(await collect(stream));
      assert.equal(finish, 'tool_calls');
      assert.equal(calls.length, 1, JSON.stringify(calls));
      assert.ok(calls[0].id, 'tool call id');
      assert.equal(calls[0].name, 'get_weather');
      assert.deepEqual(JSON.parse(calls[0].arguments), { location: 'Paris' });
    });

    test(`${model}: tool result round trip`, async () => {
      const client = openai();
      const messages = [{ role: 'user', content: 'weather in Paris?' }];
      const first = await client.chat.completions.create({ model, messages, tools: [weatherTool] });
      const call = first.choices[0].message.tool_calls[0];
      messages.push(first.choices[0].message);
      messages.push({ role: 'tool', tool_call_id: call.id, content: '{"temp_c":21}' });
      messages.push({ role: 'user', content: 'and now?' });
      const second = await client.chat.completions.create({ model, messages, tools: [weatherTool], tool_choice: 'none' });
      assert.equal(second.choices[0].finish_reason, 'stop');
      assert.match(second.choices[0].message.content, /and now\?/);
    });
  }
});

describe('parameters', () => {
  // The harness checks upstream how these were translated to Anthropic
  // (max_tokens, stop_sequences, metadata.user_id, a developer message in
  // the top-level system).
  test('sampling parameters to an Anthropic deployment', async () => {
    const res = await openai().chat.completions.create({
      model: 'claude-3-5-sonnet',
      messages: [
        { role: 'developer', content: 'e2e-developer-marker' },
        { role: 'user', content: 'params-marker-openai' },
      ],
      max_completion_tokens: 77,
      temperature: 0.3,
      top_p: 0.9,
      stop: ['END'],
      user: 'e2e-user',
    });
    assert.match(res.choices[0].message.content, /params-marker-openai/);
  });
});

describe('chat.completions.stream() helper', () => {
  for (const model of ['gpt-4o', 'claude-3-5-sonnet']) {
    test(`${model}: finalChatCompletion() with a tool call`, async () => {
      const runner = openai().chat.completions.stream({
        model,
        messages: [{ role: 'user', content: 'weather in Paris?' }],
        tools: [weatherTool],
      });
      const done = [];
      runner.on('tool_calls.function.arguments.done', (ev) => done.push(ev));
      const final = await runner.finalChatCompletion();
      const call = final.choices[0].message.tool_calls[0];
      assert.equal(final.choices[0].finish_reason, 'tool_calls');
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris' });
      assert.equal(done.length, 1, 'one arguments.done event');
    });

    test(`${model}: finalContent()`, async () => {
      const runner = openai().chat.completions.stream({ model, messages: [{ role: 'user', content: 'helper text' }] });
      const text = await runner.finalContent();
      assert.match(text, /reply to: helper text w1 w2 w3 w4/);
    });
  }
});

describe('streams are relayed as they arrive', () => {
  // The upstream waits 150 ms between its 6 content chunks: a gateway that
  // buffered the stream would deliver them all at once.
  for (const model of ['slow-stream', 'claude-slow-stream']) {
    test(`${model}: chunks are not buffered`, async () => {
      const stream = await openai().chat.completions.create({ model, messages: [{ role: 'user', content: 'slow' }], stream: true });
      const times = [];
      for await (const c of stream) {
        if (c.choices[0]?.delta?.content) times.push(performance.now());
      }
      assert.equal(times.length, 6, `six content chunks, got ${times.length}`);
      const spread = times.at(-1) - times[0];
      assert.ok(spread >= 500, `content chunks arrived within ${spread.toFixed(0)} ms of each other; the upstream spread them over 750 ms`);
    });
  }
});

describe('stream cut by the upstream', () => {
  for (const model of ['broken-cut', 'claude-cut']) {
    test(`${model}: the SDK raises instead of ending cleanly`, async () => {
      const stream = await openai().chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'cut' }],
        stream: true,
      });
      const got = [];
      let err;
      try {
        for await (const c of stream) got.push(c);
      } catch (e) {
        err = e;
      }
      assert.ok(got.length >= 1, 'the chunks before the cut arrive');
      assert.ok(err instanceof OpenAI.APIError, `expected an APIError mid-stream, got ${err?.constructor?.name}: ${err?.message}`);
      assert.match(err.message, /ended before completion/);
    });
  }
});

describe('embeddings', () => {
  test('encoding_format float: one float vector per input', async () => {
    const res = await openai().embeddings.create({
      model: 'text-embedding-3-small',
      input: ['first', 'second'],
      encoding_format: 'float',
    });
    assert.equal(res.object, 'list');
    assert.equal(res.data.length, 2);
    for (const [i, d] of res.data.entries()) {
      assert.equal(d.index, i);
      assert.ok(Array.isArray(d.embedding), 'embedding is an array');
      assert.equal(d.embedding.length, 3);
      for (const x of d.embedding) assert.equal(typeof x, 'number');
    }
    assert.ok(res.usage.prompt_tokens > 0);
  });

  test('single string input', async () => {
    const res = await openai().embeddings.create({ model: 'text-embedding-3-small', input: 'one', encoding_format: 'float' });
    assert.equal(res.data.length, 1);
    assert.deepEqual(res.data[0].embedding, [0.1, -0.2, 0.3]);
  });

  test('default encoding (the SDK asks for base64) is passed through', async () => {
    // The SDK sends encoding_format: "base64" by default; the harness checks
    // upstream that the gateway forwarded it. The fake upstream always
    // answers floats, so the SDK's base64 decoding is not exercised here.
    const response = await openai().embeddings.create({ model: 'text-embedding-3-small', input: 'b64' }).asResponse();
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.equal(body.data.length, 1);
  });
});

describe('models', () => {
  test('models.list()', async () => {
    const ids = [];
    for await (const m of openai().models.list()) {
      assert.equal(m.object, 'model');
      ids.push(m.id);
    }
    for (const n of ['gpt-4o', 'claude-3-5-sonnet', 'fast-fallback', 'text-embedding-3-small']) {
      assert.ok(ids.includes(n), `${n} in ${JSON.stringify(ids)}`);
    }
  });

  test('models.retrieve()', async () => {
    const m = await openai().models.retrieve('claude-3-5-sonnet');
    assert.equal(m.id, 'claude-3-5-sonnet');
    assert.equal(m.object, 'model');
    assert.equal(m.owned_by, 'anthropic');
  });

  test('models.retrieve() of an unknown model is NotFoundError', async () => {
    await rejectsWith(assert, openai().models.retrieve('no-such-model'), OpenAI.NotFoundError, 404);
  });
});

describe('legacy completions', () => {
  test('completions.create', async () => {
    const res = await openai().completions.create({ model: 'gpt-4o', prompt: 'Once upon a time', max_tokens: 16 });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.choices[0].text, 'upstream completion of: Once upon a time');
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.equal(res.usage.total_tokens, 9);
  });
});

describe('legacy completions through a chat model', () => {
  test('completions.create on an Anthropic deployment', async () => {
    const res = await openai().completions.create({ model: 'claude-3-5-sonnet', prompt: 'Tell me', max_tokens: 16 });
    assert.equal(res.object, 'text_completion');
    assert.equal(res.choices[0].text, 'upstream anthropic reply to: Tell me');
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.ok(res.usage.total_tokens > 0);
  });

  test('completions.create streamed on an Anthropic deployment', async () => {
    const stream = await openai().completions.create({ model: 'claude-3-5-sonnet', prompt: 'Tell me', max_tokens: 16, stream: true });
    const chunks = await collect(stream);
    assert.ok(chunks.length > 1, `several chunks, got ${chunks.length}`);
    const text = chunks.map((c) => c.choices[0]?.text ?? '').join('');
    assert.match(text, /reply to: Tell me w1 w2 w3 w4/);
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  });
});

describe('errors', () => {
  test('unknown model is NotFoundError (404)', async () => {
    const err = await rejectsWith(
      assert,
      openai().chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.NotFoundError,
      404,
    );
    assert.match(err.message, /no-such-model/);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.param, 'model');
    assert.ok(err.requestID || err.headers.get('x-request-id'), 'the error carries the request id');
  });

  test('unknown model, streamed, is NotFoundError (404)', async () => {
    await rejectsWith(
      assert,
      openai().chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }], stream: true }),
      OpenAI.NotFoundError,
      404,
    );
  });

  test('malformed request is BadRequestError (400)', async () => {
    await rejectsWith(
      assert,
      openai().chat.completions.create({ model: 'gpt-4o', messages: 'not an array' }),
      OpenAI.BadRequestError,
      400,
    );
  });

  test('missing model is BadRequestError (400)', async () => {
    await rejectsWith(assert, openai().chat.completions.create({ messages: [{ role: 'user', content: 'x' }] }), OpenAI.BadRequestError, 400);
  });

  test('missing key is AuthenticationError (401)', { skip: !hasKey && 'no master key configured' }, async () => {
    const client = openai({ defaultHeaders: { Authorization: null } });
    await rejectsWith(
      assert,
      client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.AuthenticationError,
      401,
    );
  });

  test('invalid key is AuthenticationError (401) on every endpoint', { skip: !hasKey && 'no master key configured' }, async () => {
    const client = openai({ apiKey: 'sk-wrong' });
    const err = await rejectsWith(assert, client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), OpenAI.AuthenticationError, 401);
    assert.equal(err.type, 'authentication_error');
    const msgs = [{ role: 'user', content: 'x' }];
    await rejectsWith(assert, client.chat.completions.create({ model: 'gpt-4o', messages: msgs }), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, client.chat.completions.create({ model: 'gpt-4o', messages: msgs, stream: true }), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, client.embeddings.create({ model: 'text-embedding-3-small', input: 'x', encoding_format: 'float' }), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, client.completions.create({ model: 'gpt-4o', prompt: 'x' }), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, client.models.list(), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, client.models.retrieve('gpt-4o'), OpenAI.AuthenticationError, 401);
  });

  test('upstream 429 is RateLimitError', async () => {
    const err = await rejectsWith(
      assert,
      openai({ maxRetries: 0 }).chat.completions.create({ model: 'broken-429', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.RateLimitError,
      429,
    );
    assert.ok(err.headers.get('retry-after'), 'Retry-After is passed on');
    assert.equal(err.code, 'rate_limit_exceeded');
  });

  test('upstream 429, streamed, is RateLimitError', async () => {
    await rejectsWith(
      assert,
      openai({ maxRetries: 0 }).chat.completions.create({ model: 'broken-429', messages: [{ role: 'user', content: 'x' }], stream: true }),
      OpenAI.RateLimitError,
      429,
    );
  });

  test('upstream 500 is InternalServerError', async () => {
    const err = await rejectsWith(
      assert,
      openai().chat.completions.create({ model: 'broken-500', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.InternalServerError,
    );
    assert.ok(err instanceof OpenAI.APIError);
    assert.ok(err.status >= 500, `status ${err.status}`);
  });

  test('Anthropic upstream 529 (overloaded) is an InternalServerError for the OpenAI SDK', async () => {
    const err = await rejectsWith(
      assert,
      openai().chat.completions.create({ model: 'claude-broken', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.InternalServerError,
    );
    assert.ok(err.status >= 500, `status ${err.status}`);
  });
});
