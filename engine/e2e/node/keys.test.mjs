// Virtual keys end to end: a key made by the LiteLLM-style admin API with
// the master key works with the official SDKs, and its limits answer with
// the errors the SDKs type.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { URL, KEY, hasKey, openai, anthropic, rejectsWith } from './helpers.mjs';

async function generate(body) {
  const res = await fetch(URL + '/key/generate', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

describe('virtual keys', { skip: !hasKey && 'the gateway has no master key' }, () => {
  test('a generated key works with the OpenAI and Anthropic SDKs', async () => {
    const k = await generate({ max_budget: 50.0, budget_duration: 'monthly', metadata: { team: 'product-engineering' } });
    assert.match(k.key, /^sk-/);
    assert.equal(k.max_budget, 50);
    const chat = await openai({ apiKey: k.key }).chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'with a virtual key' }],
    });
    assert.match(chat.choices[0].message.content, /with a virtual key/);
    const msg = await anthropic({ apiKey: k.key }).messages.create({
      model: 'claude-3-5-sonnet', max_tokens: 50, messages: [{ role: 'user', content: 'anthropic sdk' }],
    });
    assert.equal(msg.type, 'message');
  });

  test('a key limited to one model gets PermissionDeniedError for another', async () => {
    const k = await generate({ models: ['gpt-4o'] });
    await rejectsWith(assert, openai({ apiKey: k.key }).chat.completions.create({
      model: 'fast-fallback', messages: [{ role: 'user', content: 'x' }],
    }), OpenAI.PermissionDeniedError, 403);
  });

  test('rpm_limit answers RateLimitError with Retry-After', async () => {
    const k = await generate({ rpm_limit: 1 });
    const c = openai({ apiKey: k.key });
    await c.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'one' }] });
    const err = await rejectsWith(assert, c.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'two' }],
    }), OpenAI.RateLimitError, 429);
    assert.ok(err.headers.get('retry-after'), 'Retry-After header');
  });

  test('a blocked key is AuthenticationError', async () => {
    const k = await generate({});
    const res = await fetch(URL + '/key/block', {
      method: 'POST', headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ key: k.key }),
    });
    assert.equal(res.status, 200);
    await rejectsWith(assert, openai({ apiKey: k.key }).chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }],
    }), OpenAI.AuthenticationError, 401);
    await rejectsWith(assert, anthropic({ apiKey: k.key }).messages.create({
      model: 'claude-3-5-sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }],
    }), Anthropic.AuthenticationError, 401);
  });
});
