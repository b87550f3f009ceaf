// POST /v1/tasks at a constant rate: every task durably accepted (202), p95 < 10 ms.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, JSON_HEADERS, RATE, constantRate } from './lib.js';

export const options = {
  scenarios: { submit: constantRate(RATE) },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{expected_response:true}': ['p(95)<10', 'p(99)<50'],
    checks: ['rate>0.999'],
  },
};

const body = JSON.stringify({ type: 'echo', payload: { hello: 'world' } });

export default function () {
  const r = http.post(`${BASE_URL}/v1/tasks`, body, JSON_HEADERS);
  check(r, { 'accepted (202)': (res) => res.status === 202 });
}
