// The LiteLLM config from the issue, loaded unchanged: every model name it
// declares answers through the OpenAI SDK, streamed and not, whichever
// provider (OpenAI, Anthropic, Mistral) serves it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openai, collect } from './helpers.mjs';

const MODELS = ['gpt-4o', 'claude-3-5-sonnet', 'fast-fallback'];

test('models.list() names exactly the configured model names', async () => {
  const client = openai();
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  for (const name of MODELS) assert.ok(ids.includes(name), `${name} missing from ${JSON.stringify(ids)}`);
});

for (const model of MODELS) {
  test(`${model}: chat, not streamed`, async () => {
    const client = openai();
    const res = await client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'e2e-system-marker: answer briefly' },
        { role: 'user', content: `hello ${model}` },
      ],
      max_tokens: 64,
    });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.choices.length, 1);
    const msg = res.choices[0].message;
    assert.equal(msg.role, 'assistant');
    assert.match(msg.content, new RegExp(`hello ${model}`), 'the reply comes from the upstream for this request');
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.ok(res.usage && res.usage.total_tokens > 0, `usage: ${JSON.stringify(res.usage)}`);
  });

  test(`${model}: chat, streamed`, async () => {
    const client = openai();
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: `stream ${model}` }],
      max_tokens: 64,
      stream: true,
    });
    const chunks = await collect(stream);
    assert.ok(chunks.length > 1, `expected several chunks, got ${chunks.length}`);
    let text = '';
    let finish = null;
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.ok(c.choices.length > 0, `a chunk without choices reached a client that did not ask for usage: ${JSON.stringify(c)}`);
      text += c.choices[0].delta?.content ?? '';
      finish = c.choices[0].finish_reason ?? finish;
    }
    assert.match(text, new RegExp(`stream ${model}`));
    assert.equal(finish, 'stop');
  });
}
