// Shared setup for the end-to-end tests: where the gateway is and how to
// build SDK clients pointed at it. The Go harness (../e2e_test.go) sets
// PORTCULLIS_URL (and PORTCULLIS_KEY when the gateway has a master key).
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

export const URL = (process.env.PORTCULLIS_URL ?? '').replace(/\/+$/, '');
if (!URL) {
  throw new Error('PORTCULLIS_URL is not set: point it at a running gateway (see engine/e2e/README.md)');
}
// The gateway's master key, when it has one. Clients still need some key:
// the SDKs refuse to build without one.
export const KEY = process.env.PORTCULLIS_KEY ?? '';
export const hasKey = KEY !== '';

// Every SDK call is bounded so a hung gateway fails the test instead of the
// whole run.
const TIMEOUT_MS = 15_000;

export function openai(opts = {}) {
  return new OpenAI({
    apiKey: KEY || 'sk-no-master-key',
    baseURL: URL + '/v1',
    timeout: TIMEOUT_MS,
    maxRetries: 0,
    ...opts,
  });
}

export function anthropic(opts = {}) {
  return new Anthropic({
    apiKey: KEY || 'sk-no-master-key',
    baseURL: URL,
    timeout: TIMEOUT_MS,
    maxRetries: 0,
    ...opts,
  });
}

// collect drains an SDK stream into an array.
export async function collect(stream) {
  const out = [];
  for await (const ev of stream) out.push(ev);
  return out;
}

// rejectsWith asserts that promise rejects with an instance of cls carrying
// HTTP status; it returns the error for further checks.
export async function rejectsWith(assert, promise, cls, status) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${cls.name} (${status}), but the call succeeded`);
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
  if (status !== undefined) assert.equal(err.status, status, `status of ${cls.name}: ${err.message}`);
  return err;
}

export const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: {
      type: 'object',
      properties: { location: { type: 'string' } },
      required: ['location'],
    },
  },
};

export const anthropicWeatherTool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: {
    type: 'object',
    properties: { location: { type: 'string' } },
    required: ['location'],
  },
};
