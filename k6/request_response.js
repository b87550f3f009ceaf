// POST /v1/tasks?wait=2s: request/response mode, the finished task comes back in the answer.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, JSON_HEADERS, RATE, constantRate } from './lib.js';

export const options = {
  scenarios: { rr: constantRate(RATE) },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{expected_response:true}': ['p(95)<50', 'p(99)<200'],
    checks: ['rate>0.999'],
  },
};

const body = JSON.stringify({ type: 'echo', payload: { n: 1 } });

export default function () {
  const r = http.post(`${BASE_URL}/v1/tasks?wait=2s`, body, JSON_HEADERS);
  check(r, {
    'finished (200)': (res) => res.status === 200,
    succeeded: (res) => res.status === 200 && res.json('status') === 'succeeded',
  });
}
