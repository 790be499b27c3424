// Policies and the cache end to end with the OpenAI SDK: the shipped Rego
// policies decide team access, PII and max_tokens caps; identical
// deterministic requests are answered from the cache.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { URL, KEY, hasKey, openai, rejectsWith } from './helpers.mjs';

async function admin(path, body) {
  const res = await fetch(URL + path, {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

async function keyFor(team) {
  await admin('/team/new', { team_id: team, team_alias: team });
  return (await admin('/key/generate', { team_id: team })).key;
}

describe('policies', { skip: !hasKey && 'the gateway has no master key' }, () => {
  test('a team not allowed a model gets 403 with the policy reason', async () => {
    const c = openai({ apiKey: await keyFor('interns') });
    const err = await rejectsWith(assert, c.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }],
    }), OpenAI.PermissionDeniedError, 403);
    assert.equal(err.code, 'model_not_allowed');
    assert.match(err.message, /team interns may not use model gpt-4o/);
    assert.equal(err.type, 'policy_violation');
    // The allowed model answers, with max_tokens capped (checked upstream
    // by the Go side: the marker below).
    const ok = await c.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: 'cap-marker-1234 please' }],
    });
    assert.match(ok.choices[0].message.content, /cap-marker-1234/);
  });

  test('a prompt carrying a card number is denied', async () => {
    const c = openai({ apiKey: await keyFor('payments') });
    const err = await rejectsWith(assert, c.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'charge 4111 1111 1111 1111 please' }],
    }), OpenAI.BadRequestError, 400);
    assert.equal(err.code, 'pii_detected');
    assert.doesNotMatch(err.message, /4111/, 'the error never repeats the number');
  });

  test('an e-mail address is redacted before the upstream sees it', async () => {
    const c = openai({ apiKey: await keyFor('support') });
    const r = await c.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'write to jane.doe@example.com today' }],
    });
    const text = r.choices[0].message.content;
    assert.doesNotMatch(text, /jane\.doe@example\.com/);
    assert.match(text, /REDACTED_EMAIL/);
  });

  test('a policy evaluation error fails closed', async () => {
    const c = openai({ apiKey: await keyFor('broken') });
    const err = await rejectsWith(assert, c.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }],
    }), OpenAI.InternalServerError, 503);
    assert.equal(err.code, 'policy_error');
  });
});

describe('cache', { skip: !hasKey && 'the gateway has no master key' }, () => {
  test('an identical deterministic request is a hit, streamed or not', async () => {
    const c = openai({ apiKey: await keyFor('cachers') });
    // A fresh prompt per run, in base 36: Date.now() in decimal is a 13-digit
    // run that passes the Luhn check one time in ten, and the policies then
    // deny it as a card number.
    const req = { model: 'gpt-4o', temperature: 0, messages: [{ role: 'user', content: 'cache me ' + Date.now().toString(36) }] };
    const first = await c.chat.completions.create(req).withResponse();
    assert.equal(first.response.headers.get('x-cache'), 'MISS');
    const second = await c.chat.completions.create(req).withResponse();
    assert.equal(second.response.headers.get('x-cache'), 'HIT');
    assert.ok(second.response.headers.get('x-litellm-cache-key'));
    assert.deepEqual(second.data, first.data);
    // The cached answer, replayed as a stream through the SDK.
    const stream = await c.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = '', usage;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, first.data.choices[0].message.content);
    assert.equal(usage.completion_tokens, first.data.usage.completion_tokens);
    // Another team never gets this team's answer.
    const other = await openai({ apiKey: await keyFor('others') }).chat.completions.create(req).withResponse();
    assert.equal(other.response.headers.get('x-cache'), 'MISS');
  });
});

describe('policy operations', { skip: !hasKey && 'the gateway has no master key' }, () => {
  test('reload and status need the master key', async () => {
    let res = await fetch(URL + '/policy/reload', { method: 'POST' });
    assert.equal(res.status, 401);
    res = await fetch(URL + '/policy/reload', { method: 'POST', headers: { Authorization: 'Bearer ' + KEY } });
    assert.equal(res.status, 200, await res.clone().text());
    const st = await res.json();
    assert.match(st.revision, /^[0-9a-f]{12}$/);
    assert.equal(st.last_error ?? '', '');
    res = await fetch(URL + '/policy/status', { headers: { Authorization: 'Bearer ' + KEY } });
    assert.equal((await res.json()).revision, st.revision);
  });
});

describe('plugins', { skip: !hasKey && 'the gateway has no master key' }, () => {
  test('an e-mail address split across stream chunks arrives redacted', async () => {
    const c = openai({ apiKey: await keyFor('streamers') });
    const stream = await c.chat.completions.create({
      model: 'chatty', stream: true,
      messages: [{ role: 'user', content: 'mail john.doe@example.com or call me' }],
    });
    let text = '', chunks = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      chunks++;
    }
    assert.ok(chunks > 10, `the answer came in ${chunks} chunks`);
    assert.doesNotMatch(text, /john\.doe|example\.com/);
    assert.match(text, /mail \S*EMAIL\S* or call me/);
    // Not streamed: the same redaction on the whole body.
    const r = await c.chat.completions.create({
      model: 'chatty', messages: [{ role: 'user', content: 'write to jane@example.org now' }],
    });
    assert.doesNotMatch(r.choices[0].message.content, /jane@example\.org/);
  });

  test('a routing plugin sends short prompts to the small model and long ones to the large', async () => {
    const c = openai({ apiKey: await keyFor('routers') });
    const short = await c.chat.completions.create({
      model: 'auto', messages: [{ role: 'user', content: 'route-short-1 hi' }],
    }).withResponse();
    assert.match(short.data.choices[0].message.content, /route-short-1/);
    const long = await c.chat.completions.create({
      model: 'auto', messages: [{ role: 'user', content: 'route-long-1 ' + 'lorem ipsum '.repeat(40) }],
    });
    assert.match(long.choices[0].message.content, /route-long-1/);
  });
});
